"""The records: SQLite (handles and homed prefixes), a data dir's initial state and bulk loading."""

from __future__ import annotations

import csv
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from handles.simulator.certificates import ensure_certificate, ensure_client_certificate, public_key_jwk
from handles.simulator.datadir import DB_FILE
from handles.simulator.values import (
    ADMIN_INDEX,
    ALL_ADMIN_PERMISSIONS,
    PUBKEY_INDEX,
    SECKEY_INDEX,
    HandleValue,
    ascii_upper,
    encode_admin,
    prefix_of,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS handles (
    key TEXT PRIMARY KEY,     -- ascii_upper(handle); BINARY collation = UTF-8 byte order for listing
    handle TEXT NOT NULL,     -- the handle as first created
    vals TEXT NOT NULL        -- JSON list of HandleValue rows
);
CREATE TABLE IF NOT EXISTS prefixes (
    key TEXT PRIMARY KEY,     -- ascii_upper(prefix)
    prefix TEXT NOT NULL,     -- as given to --prefix
    admin TEXT NOT NULL       -- the admin identity handle that HS_ADMIN values of this prefix point at
);
"""


@dataclass(slots=True)
class StoredHandle:
    handle: str
    values: list[HandleValue]


def _dump_values(values: Iterable[HandleValue]) -> str:
    return json.dumps([v.to_row() for v in values], ensure_ascii=False, separators=(",", ":"))


def _load_values(text: str) -> list[HandleValue]:
    return [HandleValue.from_row(row) for row in json.loads(text)]


class Writer:
    """A connection inside a write transaction (see HandleStore.writing)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, key: str) -> StoredHandle | None:
        return _select(self.conn, key)

    def put(self, key: str, handle: str, values: list[HandleValue]) -> None:
        self.conn.execute(
            "INSERT INTO handles (key, handle, vals) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET vals = excluded.vals", (key, handle, _dump_values(values)))

    def delete(self, key: str) -> bool:
        return self.conn.execute("DELETE FROM handles WHERE key = ?", (key,)).rowcount > 0


def _select(conn: sqlite3.Connection, key: str) -> StoredHandle | None:
    row = conn.execute("SELECT handle, vals FROM handles WHERE key = ?", (key,)).fetchone()
    return None if row is None else StoredHandle(row[0], _load_values(row[1]))


def _key_range(prefix_key: str) -> tuple[str, str]:
    """Keys of handles under a prefix: from `P/` up to `P0` ('0' is the byte after '/')."""
    return prefix_key + "/", prefix_key + "0"


class HandleStore:
    """SQLite in WAL mode: readers never block; writers serialize on one lock (read-modify-write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._write_lock = threading.Lock()
        with self._connection() as conn:
            conn.executescript(_SCHEMA)
        self._load_prefixes()

    def _load_prefixes(self) -> None:
        with self._connection() as conn:
            rows = conn.execute("SELECT key, prefix, admin FROM prefixes ORDER BY key").fetchall()
        self.homed: dict[str, tuple[str, str]] = {key: (prefix, admin) for key, prefix, admin in rows}

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            yield conn
        finally:
            self._pool.put(conn)

    @contextmanager
    def writing(self) -> Iterator[Writer]:
        with self._write_lock, self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Writer(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    def get(self, key: str) -> StoredHandle | None:
        with self._connection() as conn:
            return _select(conn, key)

    def home(self, prefix: str, admin: str) -> None:
        with self.writing() as tx:
            tx.conn.execute("INSERT INTO prefixes (key, prefix, admin) VALUES (?, ?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET admin = excluded.admin", (ascii_upper(prefix), prefix, admin))
        self._load_prefixes()

    def count_under(self, prefix_key: str) -> int:
        with self._connection() as conn:
            return conn.execute("SELECT count(*) FROM handles WHERE key >= ? AND key < ?",
                                _key_range(prefix_key)).fetchone()[0]

    def keys_under(self, prefix_key: str, limit: int = -1, offset: int = 0) -> list[str]:
        """Listing pages are LIMIT/OFFSET over the key order (the real server enumerates and skips)."""
        with self._connection() as conn:
            rows = conn.execute("SELECT key FROM handles WHERE key >= ? AND key < ? ORDER BY key LIMIT ? OFFSET ?",
                                (*_key_range(prefix_key), limit, offset)).fetchall()
        return [row[0] for row in rows]




def _admin_value(admin_handle: str, now: int) -> HandleValue:
    return HandleValue(ADMIN_INDEX, "HS_ADMIN", encode_admin(admin_handle, SECKEY_INDEX, ALL_ADMIN_PERMISSIONS), timestamp=now)


def initialize(data_dir: str | Path, prefixes: Iterable[str], secret: str, admin_handle: str | None = None) -> HandleStore:
    """Prepare a data dir and return its store. Existing data is kept; a new prefix is added.

    For each prefix P the admin identity (default `P/ADMIN`, or the single `admin_handle`) holds index 100
    HS_ADMIN (itself, index 300, all permissions), 1 DESC, 300 HS_SECKEY = `secret` (permissions 1100, not
    public) and 301 HS_PUBKEY, the state the recordings start from (their README). The secret is applied on
    every start, so the one given on the command line is the one that works.
    """
    requested = [p[5:] if ascii_upper(p).startswith("0.NA/") else p for p in prefixes]
    for prefix in requested:
        if not prefix or "/" in prefix:
            raise ValueError(f"not a prefix: {prefix!r}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    cert_path, _ = ensure_certificate(data_dir)
    store = HandleStore(data_dir / DB_FILE)
    if admin_handle is not None and ascii_upper(prefix_of(admin_handle)) not in {
            ascii_upper(p) for p in requested} | set(store.homed):
        store.close()
        raise ValueError(f"the admin handle {admin_handle} must be under a served prefix")
    for prefix in requested:
        store.home(prefix, admin_handle or f"{prefix}/ADMIN")
    if not store.homed:
        store.close()
        raise ValueError("no prefix to serve: pass at least one --prefix")
    now = int(time.time())
    for admin in sorted({admin for _, admin in store.homed.values()}):
        ensure_client_certificate(data_dir, admin)
        with store.writing() as tx:
            record = tx.get(ascii_upper(admin))
            seckey = HandleValue(SECKEY_INDEX, "HS_SECKEY", secret.encode(), permissions="1100", timestamp=now)
            if record is None:
                tx.put(ascii_upper(admin), admin, [
                    _admin_value(admin, now),
                    HandleValue(1, "DESC", f"Admin handle for prefix {prefix_of(admin)}".encode(), timestamp=now),
                    seckey,
                    HandleValue(PUBKEY_INDEX, "HS_PUBKEY", ("key", public_key_jwk(cert_path)), timestamp=now),
                ])
            elif not any(v.index == SECKEY_INDEX and v.same_ignoring_timestamp(seckey) for v in record.values):
                values = [v for v in record.values if v.index != SECKEY_INDEX] + [seckey]
                tx.put(ascii_upper(admin), record.handle, values)
    return store


def bulk_load(data_dir: str | Path, pairs: Iterable[tuple[str, str]]) -> int:
    """Insert (handle, url) records in one transaction, each with the default HS_ADMIN (index 100, pointing at
    its prefix's admin identity) and the URL at index 1. Existing handles are replaced. The data dir must
    already serve the prefixes (`initialize`). Safe while a simulator runs on the same dir. Returns the count."""
    store = HandleStore(Path(data_dir) / DB_FILE)
    now = int(time.time())
    admin_rows: dict[str, str] = {}
    loaded = 0

    def rows() -> Iterator[tuple[str, str, str]]:
        nonlocal loaded
        for handle, url in pairs:
            prefix_key = ascii_upper(prefix_of(handle))
            if prefix_key not in admin_rows:
                if prefix_key not in store.homed:
                    raise ValueError(f"{handle}: the prefix {prefix_of(handle)} is not served from {data_dir}")
                admin_rows[prefix_key] = json.dumps(_admin_value(store.homed[prefix_key][1], now).to_row())
            url_row = json.dumps(HandleValue(1, "URL", url.encode(), timestamp=now).to_row(), ensure_ascii=False)
            loaded += 1
            yield ascii_upper(handle), handle, f"[{admin_rows[prefix_key]},{url_row}]"

    try:
        with store.writing() as tx:
            tx.conn.executemany("INSERT OR REPLACE INTO handles (key, handle, vals) VALUES (?, ?, ?)", rows())
    finally:
        store.close()
    return loaded


def load_csv(data_dir: str | Path, csv_path: str | Path) -> int:
    """`bulk_load` from a CSV of `handle,url` rows (an optional `handle,url` header row is skipped)."""
    with open(csv_path, newline="", encoding="utf-8") as source:
        rows = (row for row in csv.reader(source) if row and row[:2] != ["handle", "url"])
        return bulk_load(data_dir, ((row[0], row[1]) for row in rows))
