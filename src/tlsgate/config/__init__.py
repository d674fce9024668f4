"""Typed settings: parsed once from TOML / the store into pydantic models."""
