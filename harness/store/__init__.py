"""The result store every run appends to: an embedded SQLite file, or a PostgreSQL database for many hosts.

``ResultStore(location)`` opens either: a path is an SQLite file (`harness.store.sqlite`), a
``postgresql://`` (or ``postgres://``) URL a PostgreSQL database (`harness.store.postgres`). Both have the
same interface:

- ``append(record)``: write one record atomically; ``append_once(record)``: the same unless the store
  already holds a record of its ``cell_key`` (checked and written in one transaction), so one cell key
  has one record unless a run is forced;
- ``claim(cell_key)``: a context manager holding an exclusive, crash-safe claim on a cell key, so a
  second process running the same cell at once waits for the first instead of running it again;
- ``has``, ``records``, ``count``.

A record is keyed by its ``cell_key`` (config + library versions + hardware) so a sweep can resume.
"""
from __future__ import annotations

from harness.store.sqlite import ResultStore, is_postgres_url, redact

__all__ = ["ResultStore", "PostgresResultStore", "is_postgres_url", "redact"]


def __getattr__(name):
    if name == "PostgresResultStore":
        from harness.store.postgres import PostgresResultStore

        return PostgresResultStore
    raise AttributeError(name)
