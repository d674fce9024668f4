"""Thin command-line commands: parse arguments, call a typed function, print the result."""
