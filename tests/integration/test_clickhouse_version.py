"""One ClickHouse major everywhere: the chdb CI runs on, the server docker-compose.yml runs, and any server
RUNLEDGER_CLICKHOUSE_URL names (that last case is skipped, not passed, without one)."""
import re

import pytest

from infra.adapters.clickhouse import (CLICKHOUSE_MAJOR, ChdbClickHouse, ServerClickHouse, major_of,
                                       parity_warning)
from tests.integration.test_clickhouse_contract import ROOT, SERVER_URL


def chdb_version(tmp_path) -> str:
    with ChdbClickHouse(str(tmp_path / "chdb")) as ch:
        [row] = ch.query("SELECT version() AS v")
        return row["v"]


def test_chdb_embeds_the_production_major(tmp_path):
    version = chdb_version(tmp_path)
    assert major_of(version) == CLICKHOUSE_MAJOR, f"chdb embeds ClickHouse {version}"


def test_docker_compose_runs_a_server_of_the_same_major():
    compose = (ROOT / "docker-compose.yml").read_text()
    [tag] = re.findall(r"clickhouse/clickhouse-server:\$\{RUNLEDGER_CLICKHOUSE_TAG:-([0-9.]+)\}", compose)
    assert major_of(tag) == CLICKHOUSE_MAJOR, f"docker-compose.yml runs clickhouse-server {tag}"


def test_a_server_of_another_major_is_named_with_both_versions():
    assert parity_warning(f"{CLICKHOUSE_MAJOR}.3.1.2") is None
    warning = parity_warning(f"{CLICKHOUSE_MAJOR - 1}.8.4.11")
    assert f"runs {CLICKHOUSE_MAJOR - 1}.8.4.11" in warning and f"ClickHouse {CLICKHOUSE_MAJOR}.x" in warning


@pytest.mark.skipif(not SERVER_URL, reason="no ClickHouse server configured (set RUNLEDGER_CLICKHOUSE_URL or "
                                           "CLICKHOUSE_URL to check its version against chdb's)")
def test_the_configured_server_runs_the_major_chdb_embeds(tmp_path):
    with ServerClickHouse(SERVER_URL) as server:
        [row] = server.query("SELECT version() AS v")
    embedded = chdb_version(tmp_path)
    print(f"\nserver {row['v']}, chdb {embedded}")
    assert row["v"] == server.server_version
    assert major_of(row["v"]) == major_of(embedded), f"server {row['v']} vs chdb {embedded}"
