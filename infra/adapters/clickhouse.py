"""ClickHouse port and its two adapters: a ClickHouse server, or chdb (the engine in-process).

Both adapters drive clickhouse-connect's client: `ServerClickHouse` over HTTP, `ChdbClickHouse`
through clickhouse-connect's chdb interface, which runs chdb's embedded engine in this process.
So one SQL text serves both, and both return the same Python values:

- Parameters are ClickHouse's server-side bindings, `{name:Type}` in the SQL plus a dict. The
  values travel apart from the SQL text (HTTP `param_<name>`; chdb's own `params` argument) and
  the engine parses them as the declared type, so a value can never change the statement.
- Rows come back as dicts of Python values: int, float, str, bool, None, list, Decimal, date, and
  timezone-aware datetimes (UTC for UTC columns).
- Inserts are one INSERT statement per call, in ClickHouse's Native format: about 200k rows/s of
  15 columns into chdb. Without `types`, clickhouse-connect reads the column types with a
  DESCRIBE first, i.e. a second statement; callers that insert often name them.

Everything is synchronous; async callers use `asyncio.to_thread`. Importing this module connects
to nothing and does not load chdb.

chdb's data directory belongs to one process at a time (the engine holds a lock on its `status`
file), and a process hosts one chdb engine, so one data directory, at a time.

One ClickHouse major for both: CLICKHOUSE_MAJOR is the one chdb (pinned in pyproject.toml) embeds
and docker-compose.yml's server runs; a server of another major is used, with a warning naming both
versions (tests/integration/test_clickhouse_version.py holds the three to it).
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping, Sequence

Params = Mapping[str, Any]
Row = Sequence[Any]
CLICKHOUSE_MAJOR = 26  # chdb 4.4.0 embeds 26.9; docker-compose.yml runs the 26.8 LTS server
log = logging.getLogger(__name__)


def major_of(version: str) -> int:
    """The major release of a ClickHouse version string (`26.9.2.1` → 26)."""
    return int(version.split(".", 1)[0])


def parity_warning(server_version: str) -> str | None:
    """What to tell an operator whose server is not of the major this code is tested against, or None."""
    if major_of(server_version) == CLICKHOUSE_MAJOR:
        return None
    return (f"the ClickHouse server runs {server_version}, but runledger is tested against ClickHouse "
            f"{CLICKHOUSE_MAJOR}.x (the chdb it pins); SQL that differs between majors may fail: run a "
            f"{CLICKHOUSE_MAJOR}.x server, or run the contract suite against this one "
            "(RUNLEDGER_CLICKHOUSE_URL=... pytest tests/integration/test_clickhouse_contract.py)")

_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")


class ChdbPathInUse(RuntimeError):
    """Another process owns the chdb data directory (or this process runs chdb elsewhere)."""


class ClickHouse(ABC):
    """What the projectors and queries need from ClickHouse, whichever engine runs it."""

    @abstractmethod
    def command(self, sql: str, params: Params | None = None) -> None:
        """Run a statement that returns no rows (DDL, ALTER, INSERT … SELECT, OPTIMIZE, EXCHANGE)."""

    @abstractmethod
    def insert(self, table: str, columns: list[str], rows: Sequence[Row],
               types: Sequence[str] | None = None) -> None:
        """Insert rows (in `columns` order) into `table` as one block; `types` names the columns' types."""

    @abstractmethod
    def query(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        """Return the rows of a query as dicts of Python values, in the query's column order."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (for chdb: the engine and its data directory); idempotent."""

    def __enter__(self) -> ClickHouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_params(sql: str, params: Params | None) -> dict[str, Any] | None:
    """Return params as a dict after checking that each one is a `{name:Type}` placeholder in sql.

    clickhouse-connect would otherwise fall back to client-side `%(name)s` formatting for a
    statement without placeholders; refusing keeps every value server-side bound.
    """
    if not params:
        return None
    unused = set(params) - set(_PLACEHOLDER.findall(sql))
    if unused:
        raise ValueError(f"parameters {sorted(unused)} have no {{name:Type}} placeholder in the SQL")
    return dict(params)


class _ConnectClickHouse(ClickHouse):
    """The shared body of both adapters: a clickhouse-connect client, optionally behind a lock."""

    def __init__(self, client: Any, lock: threading.Lock | None) -> None:
        self._client = client
        self._lock = lock
        # Told after each statement: (kind: command/insert/query, the table or the SQL's head,
        # seconds it ran holding the engine, seconds it waited for it). For metrics and benchmarks.
        self.on_statement: list[Callable[[str, str, float, float], None]] = []

    def _call(self, kind: str, subject: str, fn: Callable[[Any], Any]) -> Any:
        if not self.on_statement:
            return self._locked(fn)
        return self._observed(kind, subject if kind == "insert" else _head(subject), fn)

    def _observed(self, kind: str, subject: str, fn: Callable[[Any], Any]) -> Any:
        """Run fn as _locked does, then tell each on_statement observer how long it ran and waited."""
        asked = time.perf_counter()
        began = ended = asked

        def timed(client: Any) -> Any:
            nonlocal began, ended
            began = time.perf_counter()
            try:
                return fn(client)
            finally:
                ended = time.perf_counter()
        try:
            return self._locked(timed)
        finally:
            for observer in self.on_statement:
                observer(kind, subject, ended - began, began - asked)

    def _locked(self, fn: Callable[[Any], Any]) -> Any:
        if self._lock is None:
            return fn(self._open_client())
        with self._lock:
            return fn(self._open_client())

    def _open_client(self) -> Any:
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__} is closed")
        return self._client

    def command(self, sql: str, params: Params | None = None) -> None:
        self._call("command", sql, lambda c: c.command(sql, parameters=check_params(sql, params)))

    def insert(self, table: str, columns: list[str], rows: Sequence[Row],
               types: Sequence[str] | None = None) -> None:
        if not rows:
            return
        named = {"column_type_names": list(types)} if types else {}
        self._call("insert", table, lambda c: c.insert(table, rows, column_names=list(columns), **named))

    def query(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        return self._call("query", sql, lambda c: list(c.query(sql, parameters=check_params(sql, params))
                                                       .named_results()))

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            if self._lock is None:
                client.close()
            else:
                with self._lock:
                    client.close()


class ServerClickHouse(_ConnectClickHouse):
    """A ClickHouse server over HTTP, e.g. `http://user:password@host:8123/database`."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        # No HTTP session id: a ClickHouse session admits one query at a time, and callers share
        # this client across threads. clickhouse-connect's HTTP pool is thread-safe without one.
        client = clickhouse_connect.get_client(dsn=url, tz_mode="aware",
                                               autogenerate_session_id=False)
        self.server_version = client.server_version
        if warning := parity_warning(self.server_version):
            log.warning(warning)
        super().__init__(client, lock=None)


class ChdbClickHouse(_ConnectClickHouse):
    """chdb, the ClickHouse engine in this process, keeping its data in the directory `path`."""

    def __init__(self, path: str) -> None:
        import clickhouse_connect

        self.path = os.path.realpath(path)
        try:
            client = clickhouse_connect.get_client(interface="chdb", path=self.path,
                                                   tz_mode="aware")
        except Exception as exc:
            raise _open_error(self.path, exc) from exc
        # clickhouse-connect already serialises calls on a chdb handle; this lock makes it this
        # adapter's guarantee (one statement at a time, close never mid-statement).
        super().__init__(client, lock=threading.Lock())


def _head(sql: str, length: int = 80) -> str:
    """The start of a statement on one line, to name it in an observation."""
    return " ".join(sql[:4 * length].split())[:length]


def open_clickhouse(url: str | None, chdb_path: str) -> ClickHouse:
    """Return a ServerClickHouse for `url`, or a ChdbClickHouse on `chdb_path` without one."""
    return ServerClickHouse(url) if url else ChdbClickHouse(chdb_path)


def chdb_owner(path: str) -> str | None:
    """Return the PID (or 'unknown') of the process holding the chdb directory, None if free."""
    try:
        fd = os.open(os.path.join(path, "status"), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode(errors="replace")
            found = re.search(r"^PID:\s*(\d+)", text, re.MULTILINE)
            return found.group(1) if found else "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _open_error(path: str, exc: Exception) -> Exception:
    owner = chdb_owner(path)
    if owner is not None:
        return ChdbPathInUse(
            f"chdb data directory {path} is in use by another process (PID {owner}): only one "
            f"process may own a chdb data directory. Stop that process, give this one another "
            f"directory, or run a ClickHouse server and set RUNLEDGER_CLICKHOUSE_URL.")
    if "already initialized with path" in str(exc):
        return ChdbPathInUse(
            f"cannot open chdb data directory {path}: this process already runs chdb on another "
            f"directory, and a process can host only one ({exc})")
    return RuntimeError(f"cannot open chdb data directory {path}: {exc}")
