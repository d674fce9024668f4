"""TLS building blocks, free of sockets: the inspection CA and its leaf certificates
(:mod:`.ca`), the ClientHello parser (:mod:`.clienthello`) and the upstream client
contexts with client-certificate detection and error classification (:mod:`.upstream`).
"""
