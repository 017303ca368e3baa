"""The ClickHouse adapter's statement observer: every statement is reported once, by kind and table or SQL head."""
from infra.adapters.clickhouse import ChdbClickHouse


def test_each_statement_is_reported_with_its_kind_subject_and_times(tmp_path):
    ch = ChdbClickHouse(str(tmp_path / "chdb"))
    seen = []
    try:
        ch.command("CREATE DATABASE IF NOT EXISTS obs")
        ch.on_statement.append(lambda kind, subject, held, waited: seen.append((kind, subject, held >= 0, waited >= 0)))
        ch.command("CREATE TABLE obs.t (k UInt64) ENGINE = MergeTree ORDER BY k")
        ch.insert("obs.t", ["k"], [(1,), (2,)], ["UInt64"])
        assert ch.query("SELECT   count()\n  AS n FROM obs.t") == [{"n": 2}]
    finally:
        ch.close()
    assert seen == [("command", "CREATE TABLE obs.t (k UInt64) ENGINE = MergeTree ORDER BY k", True, True),
                    ("insert", "obs.t", True, True), ("query", "SELECT count() AS n FROM obs.t", True, True)]
