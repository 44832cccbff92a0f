"""A context store a team shares: one SQLite file, e.g. on a shared volume.

Selected with ``ENVD_CONTEXT_STORE=sqlite``; the file is ``ENVD_SQLITE_STORE`` (a path such as
``/shared/envd/contexts.db``), else ``contexts.db`` in the envd config directory.

What is shared and what is not: the contexts are shared by everyone who opens the file; which
context is *current* is kept per user (``$USER``), because one person's ``envd context use``
must not switch a colleague's builds.

Guarantees, from SQLite's own transactions:

* every change is one ``BEGIN IMMEDIATE`` … ``COMMIT``: writers take the database's write lock
  before reading, so concurrent ``envd`` processes serialise (waiting up to ``LOCK_TIMEOUT``
  seconds) and never lose each other's changes;
* a process killed at any point leaves the old or the new state: the rollback journal
  (``journal_mode=DELETE``, ``synchronous=FULL``) is replayed by the next opener;
* a file that is not an envd store, or has a newer schema, is reported and never changed.

WAL mode is deliberately not used: it needs shared memory between the processes, which a
network volume does not give. SQLite's locking on NFS is only as good as the server's ``fcntl``
locks; a volume without working POSIX locks (some SMB mounts) is not safe for any writer.

Only the standard library is used, imported on first use (``envd context ls`` on the default
file store never loads ``sqlite3``).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envd_core.contexts.model import Context, ContextSet
from envd_core.contexts.store import ContextStore
from envd_core.errors import StoreError

if TYPE_CHECKING:
    import sqlite3

SCHEMA_VERSION = 1
FILE_NAME = "contexts.db"
LOCK_TIMEOUT = 10.0
ENV_PATH = "ENVD_SQLITE_STORE"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS contexts"
     " (name TEXT PRIMARY KEY, position INTEGER NOT NULL, doc TEXT NOT NULL)"),
    "CREATE TABLE IF NOT EXISTS current (user TEXT PRIMARY KEY, name TEXT NOT NULL)",
)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): the uid still tells users apart
        return f"uid-{os.getuid()}"


class SqliteStore(ContextStore):
    """Contexts in one SQLite file shared by a team; the current context is per user."""

    name = "sqlite"
    summary = "SQLite file shared by a team (ENVD_SQLITE_STORE), current context per user"

    @property
    def path(self) -> Path:
        explicit = os.environ.get(ENV_PATH)
        return Path(explicit).expanduser() if explicit else self.directory / FILE_NAME

    def location(self) -> str:
        return str(self.path)

    # -- reading ---------------------------------------------------------------------------
    def load(self) -> ContextSet:
        found = self._read()
        if found is not None:
            return found
        with self.transaction() as contexts:
            return contexts

    def peek(self) -> ContextSet:
        found = self._read()
        return found if found is not None else self.initial()

    def _read(self) -> ContextSet | None:
        """The stored set, or ``None`` when the store was never initialised."""
        if not self.path.exists():
            return None
        with self._connect(readonly=True) as db:
            return self._load(db)

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[ContextSet]:
        import sqlite3

        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create `{self.path.parent}`: {exc.strerror}") from None
        with self._connect(readonly=False) as db:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._error(exc) from None
            try:
                contexts = self._load(db)
                if contexts is None:  # executescript would commit: one statement at a time
                    for statement in _SCHEMA:
                        db.execute(statement)
                fresh = contexts is None
                if contexts is None:
                    contexts = self.initial()
                    # where a user new to the shared store starts: the seed's choice
                    db.execute("INSERT OR IGNORE INTO meta VALUES ('initial_current', ?)",
                               (contexts.current or "",))
                before = _snapshot(contexts)
                yield contexts
                if fresh or _snapshot(contexts) != before:
                    self._save(db, contexts)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # -- internals -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self, *, readonly: bool) -> Iterator[sqlite3.Connection]:
        import sqlite3

        # readers open read-write too (never creating the file): after a writer was killed,
        # the first opener must replay its hot journal, which a read-only connection cannot;
        # SQLite opens a file the user may not write read-only all the same
        uri = f"file:{self.path}?mode={'rw' if readonly else 'rwc'}"
        try:
            # isolation_level=None: envd issues BEGIN/COMMIT itself
            db = sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open context store `{self.path}`: {exc}") from None
        try:
            db.execute("PRAGMA synchronous=FULL")
            if not readonly:
                db.execute("PRAGMA journal_mode=DELETE")
                if not _shared_mode():  # the user's own store, like contexts.json
                    with contextlib.suppress(OSError):
                        os.chmod(self.path, 0o600)
            yield db
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None
        finally:
            db.close()

    def _error(self, exc: Exception) -> StoreError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreError(f"`{self.path}` is locked by another envd process",
                              hint="retry, or check for a stuck process using the store")
        return StoreError(
            f"context store `{self.path}` cannot be used ({text})",
            hint="fix it or move it away; envd never overwrites a store it cannot read",
        )

    def _load(self, db: sqlite3.Connection) -> ContextSet | None:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            if tables:
                raise StoreError(f"`{self.path}` is an SQLite file but not an envd context store",
                                 hint="point ENVD_SQLITE_STORE at another file")
            return None
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "schema" not in meta:
            return None
        if not meta["schema"].isdigit() or int(meta["schema"]) > SCHEMA_VERSION:
            raise StoreError(
                f"context store `{self.path}` has schema `{meta['schema']}`; this envd reads "
                f"{SCHEMA_VERSION}", hint="upgrade envd, or point ENVD_SQLITE_STORE elsewhere")
        contexts = ContextSet()
        where = f"context store `{self.path}` is corrupt"
        for name, doc in db.execute("SELECT name, doc FROM contexts ORDER BY position"):
            try:
                data: Any = json.loads(doc)
            except json.JSONDecodeError as exc:
                raise StoreError(f"{where} (context `{name}`: {exc})") from None
            contexts.contexts[name] = Context.from_json(data, where=where)
        row = db.execute("SELECT name FROM current WHERE user = ?", (_user(),)).fetchone()
        # a user new to a shared store starts on the store's first current context
        contexts.current = row[0] if row else (meta.get("initial_current") or None)
        return contexts

    def _save(self, db: sqlite3.Connection, contexts: ContextSet) -> None:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        db.execute("DELETE FROM contexts")
        db.executemany(
            "INSERT INTO contexts VALUES (?, ?, ?)",
            [(ctx.name, i, json.dumps(ctx.to_json(), sort_keys=True))
             for i, ctx in enumerate(contexts.contexts.values())],
        )
        if contexts.current is None:
            db.execute("DELETE FROM current WHERE user = ?", (_user(),))
        else:
            db.execute("INSERT OR REPLACE INTO current VALUES (?, ?)",
                       (_user(), contexts.current))


def _shared_mode() -> bool:
    """A store named by ENVD_SQLITE_STORE is meant to be shared: its mode is the admin's."""
    return bool(os.environ.get(ENV_PATH))


def _snapshot(contexts: ContextSet) -> tuple[object, ...]:
    return (contexts.current, [c.to_json() for c in contexts.contexts.values()])
