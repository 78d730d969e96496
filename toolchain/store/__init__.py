"""The measurement database (SQLite, WAL, forward-only migrations)."""

from .db import DB_NAME, RecordStore, default_db_path

__all__ = ["DB_NAME", "RecordStore", "default_db_path"]
