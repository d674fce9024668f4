"""benchmarks.profile charges perf's samples to their owners: a compiled tlsgate
function, a shared cost (system call, OpenSSL, llhttp, the TLS message hook,
interpreted Python) or ``[other]``; samples taken while Python exits are left out.
Fed perf's own text."""

from __future__ import annotations

from benchmarks.profile import Profile, compiled_name, owner, parse_perf_script

# `perf script -F ip,sym`: one block per sample, innermost frame first.
PERF_SCRIPT = """\

\t    7fa1 __GI___libc_write
\t    7fa2 uv__write
\t    7fa3 CPyDef_connection___Connection___write
\t    7fa4 CPyDef_session___Session____fast_request

\tffffffff8100 tcp_sendmsg
\tffffffff8101 do_syscall_64
\tffffffff8102 entry_SYSCALL_64
\t    7fa1 __GI___libc_write
\t    7fa3 CPyDef_connection___Connection___write

\t    5a01 aes_gcm_cipher
\t    5a02 SSL_read_ex
\t    5a03 _ssl__SSLSocket_read
\t    7fb0 CPyDef_connection___Connection____tls_read_all

\t    6b01 _PyObject_Malloc
\t    6b02 PyType_GenericAlloc (inlined)
\t    6b03 CPyDef_headers___Fields
\t    6b04 CPyDef_reader___RequestReader____validate_head

\t    6c01 build_string
\t    6c02 _PySSL_msg_callback
\t    5a02 SSL_read_ex
\t    7fb0 CPyDef_connection___Connection____tls_read_all

\t    6d01 gc_collect_main
\t    6d02 Py_FinalizeEx
\t    6d03 Py_RunMain

\t    6e01 _PyEval_EvalFrameDefault
\t    6e02 PyEval_EvalCode

\t    6f01 _PyObject_Malloc
\t    6f02 _PyEval_EvalFrameDefault
\t    6f03 _PyFunction_Vectorcall
\t    6f04 CPyDef_connection___Connection____tls_read_all
"""


def test_stacks_are_read_innermost_first_without_the_inlined_mark() -> None:
    stacks = list(parse_perf_script(PERF_SCRIPT))
    assert len(stacks) == 8
    assert stacks[3][:2] == ["_PyObject_Malloc", "PyType_GenericAlloc"]


def test_mypyc_names_become_dotted_names() -> None:
    assert compiled_name("CPyDef_connection___Connection____tls_read_all") == (
        "connection.Connection._tls_read_all"
    )
    assert compiled_name("CPyDef_session____FastResponse___data") == "session._FastResponse.data"


def test_each_sample_goes_to_its_innermost_owner() -> None:
    owners = [owner(s) for s in parse_perf_script(PERF_SCRIPT)]
    assert owners == [
        # In the C library's wrapper but not yet in the kernel: the caller's cost.
        "connection.Connection.write",
        "[syscall write]",
        "[OpenSSL read]",
        # The C API a compiled function calls (an allocation) is its own cost.
        "headers.Fields",
        # The hook's argument building, inside OpenSSL's read: the hook, not OpenSSL.
        "[ssl message hook]",
        "[other] gc_collect_main",
        # Code the interpreter runs (not compiled) is one owner: its frames name no
        # function.
        "[interpreted Python]",
        # ... named by the compiled function that called it, when one did.
        "[interpreted Python] called by connection.Connection._tls_read_all",
    ]


def test_samples_at_exit_are_left_out_and_the_table_adds_up() -> None:
    prof = Profile.of(parse_perf_script(PERF_SCRIPT))
    assert prof.samples == 7
    assert "[other] gc_collect_main" not in prof.owners
    table = prof.table(top=2, us_per_sample=2.0).splitlines()
    assert table[0] == "| owner | share | µs/request |"
    # Two owners shown, the five others summed: 7 samples, 14 µs in all.
    shown = [row for row in table[2:] if not row.startswith("| (the other")]
    assert len(shown) == 2
    assert table[-1] == "| (the other 5 owners) | 71.4% | 10.0 |"
    assert prof.table(top=10, us_per_sample=None).splitlines()[0] == "| owner | share |"
