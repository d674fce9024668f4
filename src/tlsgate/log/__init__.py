"""The Web Proxy log: records, formats, sinks, the asynchronous writer and queries.

The proxy makes one :class:`LogRecord` per request and hands it to
:meth:`LogWriter.submit`; sinks store it (SQLite ``HOME/log.db`` or the PostgreSQL
store, optionally W3C files); :mod:`tlsgate.log.query` searches it for ``tlsgate log``.
See docs/log.md.
"""

from tlsgate.log.database import LogDatabase, PostgresLogSink, SqliteLogSink
from tlsgate.log.formats import render_detail, to_json, to_squid, to_w3c, w3c_header
from tlsgate.log.query import LogQuery, find_request, follow, run_query
from tlsgate.log.record import (
    LOG_TYPE_FORWARD,
    OBJECT_SOURCES,
    LogRecord,
    new_request_id,
    object_source_text,
)
from tlsgate.log.sinks import AnyLogSink, AsyncLogSink, LogSink, W3CFileSink, open_log_sink
from tlsgate.log.writer import LogWriter, Retention

__all__ = [
    "LOG_TYPE_FORWARD",
    "OBJECT_SOURCES",
    "AnyLogSink",
    "AsyncLogSink",
    "LogDatabase",
    "LogQuery",
    "LogRecord",
    "LogSink",
    "LogWriter",
    "PostgresLogSink",
    "Retention",
    "SqliteLogSink",
    "W3CFileSink",
    "find_request",
    "follow",
    "new_request_id",
    "object_source_text",
    "open_log_sink",
    "render_detail",
    "run_query",
    "to_json",
    "to_squid",
    "to_w3c",
    "w3c_header",
]
