"""The store: the interface the rest of dedupd uses, and its backends.

- :mod:`dedupd.store.sqlite`: one SQLite file, the embedded default (the only
  module that imports sqlite-utils).

The interface itself is :class:`dedupd.backend.StoreBackend`.  Every SQL
statement of the package lives in a backend module here.
"""

from __future__ import annotations

from dedupd.store.sqlite import Store, default_db_path, read_daemon_status, write_daemon_status

__all__ = ["Store", "default_db_path", "read_daemon_status", "write_daemon_status"]
