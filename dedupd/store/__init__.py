"""The store: the interface the rest of dedupd uses, and its backends.

- :mod:`dedupd.store.sqlite`: one SQLite file, the embedded default (the only
  module that imports sqlite-utils).
- :mod:`dedupd.store.postgres`: a PostgreSQL database named by a
  ``postgresql://`` URL (the only module that imports psycopg), imported only
  when one is opened.

The interface itself is :class:`dedupd.backend.StoreBackend`; :data:`AnyStore`
is what the callers that need more than it (audit, intents, review) take.
Every SQL statement of the package lives in a backend module here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from dedupd.models import PostgresUrl, StoreLocation
from dedupd.store.sqlite import Store, default_db_path

if TYPE_CHECKING:
    from dedupd.store.postgres import PostgresStore

#: a store of either backend; mypy checks every call on it against both
AnyStore: TypeAlias = "Store | PostgresStore"

__all__ = [
    "AnyStore",
    "Store",
    "default_db_path",
    "location_of",
    "open_store",
    "read_daemon_status",
    "write_daemon_status",
]


def location_of(text: str | Path) -> StoreLocation:
    """A ``postgresql://`` URL names a PostgreSQL store; anything else is a SQLite file's path."""
    if isinstance(text, str) and PostgresUrl.matches(text):
        return PostgresUrl(text)
    return Path(text)


def open_store(location: StoreLocation, *, readonly: bool = False, host: str | None = None) -> AnyStore:
    """Open the store at ``location`` with the backend its kind calls for.

    ``host``: the name this machine has in a store several hosts share
    (PostgreSQL; default: its host name).  A SQLite store is one host's."""
    if isinstance(location, PostgresUrl):
        from dedupd.store.postgres import PostgresStore  # noqa: PLC0415 - psycopg only when asked for

        return PostgresStore.open(location, readonly=readonly, host=host)
    return Store.open(location, readonly=readonly)


def write_daemon_status(store: AnyStore, *, pid: int, started_at: float, state: str, data: dict[str, Any]) -> None:
    """Record what the running daemon says about itself (one row per store)."""
    store.write_daemon_status(pid=pid, started_at=started_at, state=state, data=data)


def read_daemon_status(store: AnyStore) -> dict[str, Any] | None:
    """What the daemon last said about itself, or None."""
    return store.read_daemon_status()
