"""Pure HTTP/1.1: message framing on httptools plus the checks httptools leaves to us.

No sockets here.  Feed bytes, get events; build heads from values.  See
``docs/http.md`` for what is accepted, rejected and normalised.
"""
