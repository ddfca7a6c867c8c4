"""Subscriptions on disk: SQLite (stdlib), one writer, a versioned schema.

The bridge reads the whole table once at startup (into `SubscriptionIndex`)
and writes only when a user's command changes something, or when a
bouncing JID is removed: small indexed statements, fast enough to run on
the event loop. Nothing is written per change.

One bridge at a time: `SubscriptionStore.open` takes an exclusive
``flock`` on ``DATABASE.lock`` (holding the process id) and keeps it until
`close`; a second bridge on the same file fails to start with
`StoreLockedError`. The schema carries its version (``schema_version``);
`MIGRATIONS` brings an older file up to date in one transaction, and a
file from a newer version is refused rather than misread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

from .model import KINDS, Subscription, Target

#: Schema migrations: entry N brings version N to N + 1. Append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE subscriptions (
        id INTEGER PRIMARY KEY,
        jid TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('page', 'user', 'filter')),
        wiki TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        canonical TEXT NOT NULL DEFAULT '',
        namespaces TEXT,
        title_glob TEXT,
        min_change INTEGER,
        spec TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL
    );
    CREATE UNIQUE INDEX subscriptions_unique ON subscriptions (jid, kind, wiki, canonical, spec);
    CREATE TABLE users (
        jid TEXT PRIMARY KEY,
        muted_until REAL
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(OSError):
    """The subscription database cannot be used (the message says why)."""


class StoreLockedError(StoreError):
    """Another bridge holds the database."""


class SubscriptionStore:
    """Keeps the subscriptions in SQLite, and holds the lock that keeps a second bridge out."""

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_fd: int) -> None:
        self.path = path
        self._db = connection
        self._lock_fd: int | None = lock_fd

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SubscriptionStore:
        """Lock, open (creating it if needed) and migrate the database at `path`."""
        file = Path(path)
        lock_path = file.with_name(file.name + ".lock")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"subscriptions database {file}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreLockedError(
                f"subscriptions database {file} is in use by another udp2xmpp "
                f"(pid {holder}, lock {lock_path}); one bridge per database"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        connection: sqlite3.Connection | None = None
        try:
            connection = sqlite3.connect(file, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            _migrate(connection, file)
        except (sqlite3.Error, StoreError) as exc:
            if connection is not None:
                connection.close()
            _unlock(fd)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"subscriptions database {file}: {exc}") from None
        return cls(file, connection, fd)

    def close(self) -> None:
        if self._lock_fd is None:
            return
        self._db.close()
        _unlock(self._lock_fd)
        self._lock_fd = None

    # -- reading ----------------------------------------------------------------------

    def load(self) -> list[Subscription]:
        rows = self._db.execute(
            "SELECT id, jid, kind, wiki, name, namespaces, title_glob, min_change, created "
            "FROM subscriptions ORDER BY id"
        ).fetchall()
        return [_row_to_subscription(row) for row in rows]

    def mutes(self) -> dict[str, float]:
        rows = self._db.execute(
            "SELECT jid, muted_until FROM users WHERE muted_until IS NOT NULL"
        ).fetchall()
        return {jid: float(until) for jid, until in rows}

    def secret(self) -> bytes:
        """A random key kept in the database, for hashing JIDs in logs the same way each run."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'log_salt'").fetchone()
        if row is not None:
            return bytes.fromhex(row[0])
        salt = secrets.token_bytes(16)
        self._db.execute("INSERT INTO meta (key, value) VALUES ('log_salt', ?)", (salt.hex(),))
        return salt

    # -- writing (commands only) -------------------------------------------------------

    def add(self, jid: str, target: Target, now: float) -> Subscription | None:
        """Store a subscription; None when `jid` already has this one."""
        namespaces = (
            ",".join(str(n) for n in target.namespaces) if target.namespaces is not None else None
        )
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO subscriptions "
            "(jid, kind, wiki, name, canonical, namespaces, title_glob, min_change, spec, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                jid,
                target.kind,
                target.wiki,
                target.name,
                target.key[2],
                namespaces,
                target.title_glob,
                target.min_change,
                target.spec,
                now,
            ),
        )
        if cursor.rowcount == 0 or cursor.lastrowid is None:
            return None
        return Subscription(cursor.lastrowid, jid, target, now)

    def remove(self, ids: list[int]) -> None:
        if not ids:
            return
        self._db.execute("BEGIN")
        try:
            self._db.executemany("DELETE FROM subscriptions WHERE id = ?", [(i,) for i in ids])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def remove_jid(self, jid: str) -> None:
        """Forget everything about `jid` (its subscriptions and its mute)."""
        self._db.execute("BEGIN")
        try:
            self._db.execute("DELETE FROM subscriptions WHERE jid = ?", (jid,))
            self._db.execute("DELETE FROM users WHERE jid = ?", (jid,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def set_mute(self, jid: str, until: float | None) -> None:
        if until is None:
            self._db.execute("DELETE FROM users WHERE jid = ?", (jid,))
        else:
            self._db.execute(
                "INSERT INTO users (jid, muted_until) VALUES (?, ?) "
                "ON CONFLICT (jid) DO UPDATE SET muted_until = excluded.muted_until",
                (jid, until),
            )

    def schema_version(self) -> int:
        return _version(self._db)


def _migrate(db: sqlite3.Connection, file: Path) -> None:
    db.execute("BEGIN EXCLUSIVE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = _version(db)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"subscriptions database {file} has schema version {version}, "
                f"newer than this udp2xmpp knows ({SCHEMA_VERSION}); upgrade udp2xmpp"
            )
        for step in MIGRATIONS[version:]:
            for statement in step.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _row_to_subscription(row: Any) -> Subscription:
    sub_id, jid, kind, wiki, name, namespaces, glob, min_change, created = row
    if kind not in KINDS:
        raise StoreError(f"subscription {sub_id}: unknown kind {kind!r}")
    ns = tuple(int(n) for n in namespaces.split(",")) if namespaces is not None else None
    target = Target(kind, wiki, name, ns, glob, min_change)
    return Subscription(sub_id, jid, target, created)
