"""The pure parts of the ClickHouse port: parameter checks, lock diagnosis, the factory."""
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.adapters import clickhouse
from infra.adapters.clickhouse import ChdbPathInUse, _ConnectClickHouse, check_params, chdb_owner

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_module_loads_no_engine_and_connects_nowhere():
    code = ("import sys, infra.adapters.clickhouse; "
            "assert 'chdb' not in sys.modules, 'chdb imported'; "
            "assert 'clickhouse_connect' not in sys.modules, 'clickhouse_connect imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_params_must_each_have_a_placeholder():
    assert check_params("SELECT 1", None) is None
    assert check_params("SELECT 1", {}) is None
    sql = "SELECT * FROM t WHERE a = {a:String} AND b IN {b:Array(Int64)} AND c = { c : UInt8 }"
    assert check_params(sql, {"a": "x", "b": [1], "c": 1}) == {"a": "x", "b": [1], "c": 1}
    with pytest.raises(ValueError, match=r"\['tenant'\]"):
        check_params("SELECT * FROM t WHERE tenant_id = %(tenant)s", {"tenant": "x"})


class FakeResult:
    def __init__(self, rows):
        self.rows = rows

    def named_results(self):
        return iter(self.rows)


class FakeClient:
    def __init__(self):
        self.calls, self.closed = [], 0

    def command(self, sql, parameters=None):
        self.calls.append(("command", sql, parameters))

    def insert(self, table, rows, column_names, **named):
        self.calls.append(("insert", table, rows, column_names, *named.items()))

    def query(self, sql, parameters=None):
        self.calls.append(("query", sql, parameters))
        return FakeResult([{"one": 1}])

    def close(self):
        self.closed += 1


@pytest.mark.parametrize("locked", [False, True])
def test_adapter_body_passes_params_for_server_side_binding(locked):
    import threading

    client = FakeClient()
    ch = _ConnectClickHouse(client, threading.Lock() if locked else None)
    ch.command("ALTER TABLE t DELETE WHERE a = {a:String}", {"a": "x'"})
    assert ch.query("SELECT {n:Int64} AS one", {"n": 1}) == [{"one": 1}]
    ch.insert("db.t", ["a"], [])
    ch.insert("db.t", ["a"], [("x",)])
    ch.insert("db.t", ["a", "b"], [("x", 1)], ("String", "UInt8"))
    assert client.calls == [
        ("command", "ALTER TABLE t DELETE WHERE a = {a:String}", {"a": "x'"}),
        ("query", "SELECT {n:Int64} AS one", {"n": 1}),
        ("insert", "db.t", [("x",)], ["a"]),
        ("insert", "db.t", [("x", 1)], ["a", "b"], ("column_type_names", ["String", "UInt8"])),
    ]
    ch.close()
    ch.close()
    assert client.closed == 1
    with pytest.raises(RuntimeError, match="closed"):
        ch.query("SELECT 1")


def test_chdb_owner_reads_the_pid_from_a_locked_status_file(tmp_path):
    assert chdb_owner(str(tmp_path / "missing")) is None
    status = tmp_path / "status"
    status.write_text("PID: 4242\nStarted at: 2026-01-01 00:00:00\nRevision: 1\n")
    assert chdb_owner(str(tmp_path)) is None
    fd = os.open(status, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert chdb_owner(str(tmp_path)) == "4242"
        status.write_text("garbage")
        assert chdb_owner(str(tmp_path)) == "unknown"
    finally:
        os.close(fd)
    assert chdb_owner(str(tmp_path)) is None


def test_open_errors_name_the_directory_and_the_rule(tmp_path):
    status = tmp_path / "status"
    status.write_text("PID: 99\n")
    fd = os.open(status, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        error = clickhouse._open_error(str(tmp_path), RuntimeError("Error initializing EmbeddedServer"))
    finally:
        os.close(fd)
    assert isinstance(error, ChdbPathInUse)
    assert str(tmp_path) in str(error) and "PID 99" in str(error)
    assert "only one process may own a chdb data directory" in str(error)

    other = clickhouse._open_error(str(tmp_path), RuntimeError(
        "EmbeddedServer already initialized with path '/a', cannot connect with different path"))
    assert isinstance(other, ChdbPathInUse) and "only one" in str(other)

    plain = clickhouse._open_error(str(tmp_path), RuntimeError("disk full"))
    assert type(plain) is RuntimeError and str(tmp_path) in str(plain) and "disk full" in str(plain)


def test_factory_picks_the_server_when_a_url_is_given(monkeypatch):
    monkeypatch.setattr(clickhouse, "ServerClickHouse", lambda url: ("server", url))
    monkeypatch.setattr(clickhouse, "ChdbClickHouse", lambda path: ("chdb", path))
    assert clickhouse.open_clickhouse("http://u:p@h:8123/db", "/data") == ("server", "http://u:p@h:8123/db")
    assert clickhouse.open_clickhouse(None, "/data") == ("chdb", "/data")
    assert clickhouse.open_clickhouse("", "/data") == ("chdb", "/data")
