"""The configuration store: revisions, staged changes, members, learned exceptions and
the admin console's users and API tokens.

One store (embedded SQLite in the home directory, or PostgreSQL shared by several
members) holds every configuration revision.  Commands stage changes; ``apply`` turns
them into a new revision; every ``tlsgate serve`` member follows the newest revision
live and reports what it runs.  See docs/store.md.
"""

from tlsgate.store.ops import ChangeOp, apply_ops
from tlsgate.store.store import (
    AdminCredential,
    LearnedException,
    MemberStatus,
    Revision,
    Store,
    open_store,
)

__all__ = [
    "AdminCredential",
    "ChangeOp",
    "LearnedException",
    "MemberStatus",
    "Revision",
    "Store",
    "apply_ops",
    "open_store",
]
