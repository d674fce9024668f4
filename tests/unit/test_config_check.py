"""``tlsgate config check``: every problem of a broken file as one line with file:line and path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlsgate.commands.policy import config_check, config_export
from tlsgate.config.loader import check_config_file, load_config_file, locate
from tlsgate.config.model import TlsgateConfig
from tlsgate.config.toml_writer import config_to_toml, dumps
from tlsgate.errors import ConfigError

GOOD = """\
[inspection]
enabled = true

[[networks]]
name = "Branch"
addresses = ["10.1.0.0/16"]

[[domain_sets]]
name = "Partners"
domains = ["partner.example", "*.partner.example"]

[[url_sets]]
name = "Docs"
urls = ["https://docs.example/manual/"]

[[rules]]
name = "Allow web access"
action = "allow"
sources = ["Internal"]
destinations = ["any"]

[[rules]]
name = "Partners"
action = "allow"
sources = ["Branch", "192.0.2.0/24"]
destinations = ["Partners", "Docs"]
connect_ports = [443, 8443]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tlsgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    config, found = check_config_file(write(tmp_path, text))
    assert config is None
    return found


def test_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    config = load_config_file(path)
    assert [r.name for r in config.rules] == ["Allow web access", "Partners"]
    assert [n.name for n in config.networks] == ["Internal", "Branch"]  # Internal kept
    result = CliRunner().invoke(config_check, [str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{path}: OK\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # bad TOML
        (
            '[inspection]\nenabled = true\nsources = ["a",\n',
            "{f}:3: not valid TOML: Invalid value (at the end of the file)",
        ),
        ("[inspection\nenabled = true\n", "{f}:1: not valid TOML: "),
        # unknown option, with the nearest name
        (
            "[inspection]\nenabled = true\non_client_certficate = 'deny'\n",
            "{f}:3: inspection.on_client_certficate: unknown option (did you mean "
            "'on_client_certificate'?)",
        ),
        ("colour = 'blue'\n", "{f}:1: colour: unknown option (allowed: inspection,"),
        (
            GOOD + 'sorce = ["x"]\n',
            "{f}:28: rules[1].sorce: unknown option (did you mean 'sources'?)",
        ),
        # wrong type
        (
            "[limits]\nmax_header_bytes = 'big'\n",
            "{f}:2: limits.max_header_bytes: Input should be a valid integer, unable to parse "
            "string as an integer (got 'big')",
        ),
        (
            GOOD.replace("connect_ports = [443, 8443]", "connect_ports = [443, 'https']"),
            "{f}:27: rules[1].connect_ports[1]: Input should be a valid integer",
        ),
        (
            "[inspection]\non_client_certificate = 'allow'\n",
            "{f}:2: inspection.on_client_certificate: 'allow' is not one of 'tunnel' or 'deny'",
        ),
        (
            GOOD.replace(
                'action = "allow"\nsources = ["Branch"', 'action = "permit"\nsources = ["Branch"'
            ),
            "{f}:24: rules[1].action: 'permit' is not one of 'allow' or 'deny'",
        ),
        # unknown set name in a rule
        (
            GOOD.replace(
                'destinations = ["Partners", "Docs"]', 'destinations = ["partnerz", "Docs"]'
            ),
            "{f}:26: rules[1].destinations[0]: unknown domain set 'partnerz' (did you mean "
            "'Partners'?)",
        ),
        (
            GOOD.replace('sources = ["Branch", ', 'sources = ["Brunch", '),
            "{f}:25: rules[1].sources[0]: unknown network or computer set 'Brunch' (did you "
            "mean 'Branch'?)",
        ),
        (
            GOOD.replace('sources = ["Branch", ', 'sources = ["Partners", '),
            "{f}:25: rules[1].sources[0]: 'Partners' is a domain set, which cannot be a source",
        ),
        (
            GOOD + 'users = ["alice"]\n',
            "{f}:28: rules[1].users[0]: unknown user or user set 'alice'",
        ),
        # bad values
        (
            GOOD.replace('"*.partner.example"', '"*.partner example"'),
            "{f}:10: domain_sets[0].domains: '*.partner example' is not a host name",
        ),
        (
            GOOD.replace('"10.1.0.0/16"', '"10.1.0.0/33"'),
            "{f}:6: networks[0].addresses: '10.1.0.0/33' is not an IP address or CIDR",
        ),
        (
            GOOD.replace("https://docs.example/manual/", "ftp://docs.example/"),
            "{f}:14: url_sets[0].urls: 'ftp://docs.example/': scheme must be http, https or *",
        ),
        (
            GOOD.replace('name = "Partners"\naction', 'name = "Allow web access"\naction'),
            "{f}:23: rules[1].name: duplicate rule name (also rules[0]); rule names are unique",
        ),
        (
            GOOD.replace('name = "Partners"\naction', 'name = "Default rule"\naction'),
            "{f}:23: rules[1].name: 'Default rule' is the built-in last rule",
        ),
        (
            GOOD.replace('name = "Docs"', 'name = "partners"'),
            "{f}:13: url_sets[0].name: the name is already used by the domain set 'Partners'",
        ),
        (
            GOOD.replace('name = "Branch"', 'name = "External"'),
            "{f}:5: networks[0].name: 'External' is reserved",
        ),
        (
            "[[rules]]\nname = 'x'\naction = 'allow'\nsources = ['any']\n",
            "{f}:1: rules[0].destinations: required option is missing",
        ),
    ],
)
def test_broken_file_gives_one_precise_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    found = problems(tmp_path, text)
    want = expected.format(f=path)
    assert any(p.startswith(want) for p in found), found
    assert all("\n" not in p for p in found)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        GOOD.replace("enabled = true", "enabled = 'maybe'").replace(
            'destinations = ["Partners", "Docs"]', 'destinations = ["partnerz", "Docs"]'
        )
        + "\n[limits]\nmax_header_count = 'x'\ncolor = 1\n"
    )
    found = problems(tmp_path, text)
    assert len(found) == 4, found
    assert [p.split(": ")[1] for p in found] == [
        "inspection.enabled",
        "limits.max_header_count",
        "limits.color",
        "rules[1].destinations[0]",
    ]


def test_a_broken_set_is_not_also_reported_as_unknown(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD.replace('"*.partner.example"', '"bad name"'))
    assert len(found) == 1 and "domain_sets[0].domains" in found[0]


def test_cli_reports_problems_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[inspection]\nenabled = 'maybe'\nbogus = 1\n")
    result = CliRunner().invoke(config_check, [str(path)])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{path}:2: inspection.enabled: ")
    assert lines[1].startswith(f"{path}:3: inspection.bogus: unknown option")
    assert lines[2] == f"{path}: 2 problems"
    assert "OK" not in result.stdout


def test_cli_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(config_check, [str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"{tmp_path / 'nope.toml'}: no such file")


def test_load_raises_config_error_naming_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "[inspection]\nenabled = 'maybe'\nbogus = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert "inspection.enabled" in info.value.message and "inspection.bogus" in info.value.message
    assert "\n" not in info.value.one_line()


def test_model_error_without_a_file_names_rule_and_set() -> None:
    with pytest.raises(ValueError, match=r"rules\[2\] 'Partners': unknown domain set 'partnerz'"):
        TlsgateConfig.model_validate(
            {
                "rules": [
                    {"name": "A", "action": "allow", "sources": ["any"], "destinations": ["any"]},
                    {"name": "B", "action": "allow", "sources": ["any"], "destinations": ["any"]},
                    {
                        "name": "Partners",
                        "action": "allow",
                        "sources": ["Internal"],
                        "destinations": ["partnerz"],
                    },
                ]
            }
        )


def test_locate_follows_arrays_of_tables() -> None:
    text = "[a]\nx = 1\n\n[[rules]]\nname = 'a'\n\n[[rules]]\nname = 'b'\nsources = []\n"
    assert locate(text, ("a", "x")) == 2
    assert locate(text, ("rules", 0, "name")) == 5
    assert locate(text, ("rules", 1, "sources", 0)) == 9
    assert locate(text, ("rules", 1, "methods")) == 7
    assert locate(text, ("nothing",)) is None


# -- export ----------------------------------------------------------------------------------


def test_export_round_trips(tmp_path: Path) -> None:
    config = load_config_file(write(tmp_path, GOOD))
    text = config_to_toml(config, header="exported")
    assert text.startswith("# exported\n")
    assert TlsgateConfig.model_validate(tomllib.loads(text)) == config


def test_export_defaults_round_trip() -> None:
    text = config_to_toml(TlsgateConfig())
    assert TlsgateConfig.model_validate(tomllib.loads(text)) == TlsgateConfig()


def test_toml_writer_escapes() -> None:
    data = {"a b": 'quote " back \\ tab \t nl \n ü', "n": [1.5, float("inf")], "t": {"x": None}}
    assert tomllib.loads(dumps(data)) == {"a b": data["a b"], "n": [1.5, float("inf")], "t": {}}


def test_export_command(tmp_path: Path) -> None:
    src = write(tmp_path, GOOD)
    out = tmp_path / "out.toml"
    result = CliRunner().invoke(config_export, ["--config", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_config_file(out) == load_config_file(src)
    result = CliRunner().invoke(config_export, ["--config", str(src)])
    assert 'name = "Partners"' in result.stdout


def test_documented_example_is_valid() -> None:
    doc = Path(__file__).parents[2] / "docs" / "configuration.md"
    text = doc.read_text(encoding="utf-8").split("## Example\n\n```toml\n")[1].split("```")[0]
    fake_hash = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
    text = text.replace("$argon2id$v=19$m=65536,t=3,p=4$...", fake_hash)
    config = TlsgateConfig.model_validate(tomllib.loads(text))
    assert [r.name for r in config.rules][-1] == "Allow web access"
