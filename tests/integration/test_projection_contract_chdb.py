"""The Projection contract on ClickHouse (chdb, in this process): idempotent rather than atomic."""
import asyncio

import pytest

pytest.register_assert_rewrite("tests.projection_contract")

from infra.adapters.clickhouse import ChdbClickHouse  # noqa: E402
from projectors.ch import ClickHouseProjection  # noqa: E402
from tests.projection_contract import Crash, ProjectionContract  # noqa: E402

COLUMNS = ["tenant_id", "chain_seq", "note"]


class Notes(ClickHouseProjection):
    """The contract's read model: one note per event, collapsing replays by (tenant_id, chain_seq)."""
    name = "notes"
    ddl = ["CREATE TABLE IF NOT EXISTS {db}.notes (tenant_id String, chain_seq UInt64, note String) "
           "ENGINE = ReplacingMergeTree ORDER BY (tenant_id, chain_seq)"]
    fuse: int | None = None

    def rows(self, envelopes: list[dict]) -> dict[str, tuple[list[str], list[tuple]]]:
        return {"notes": (COLUMNS, [(e["tenant_id"], e["chain_seq"], e["payload"]["note"]) for e in envelopes])}

    def insert(self, table: str, columns: list[str], rows: list[tuple]) -> None:
        if not table.startswith("notes") or self.fuse is None:  # notes, or notes_probe when probing
            return super().insert(table, columns, rows)
        fuse, self.fuse = self.fuse, None
        super().insert(table, columns, rows[:fuse])
        raise Crash(f"the row write failed after {fuse} rows")


class TestChdbProjection(ProjectionContract):
    atomic = False

    @pytest.fixture(autouse=True)
    def engine(self, tmp_path):
        """chdb on this test's own directory; one per process at a time, so closed before the next."""
        self.ch = ChdbClickHouse(str(tmp_path / "chdb"))
        try:
            yield
        finally:
            self.ch.close()

    def projection(self, prefix: str) -> Notes:
        return Notes(self.ch, prefix)

    async def rows(self, projection: Notes) -> list[tuple[str, int, str]]:
        found = await asyncio.to_thread(self.ch.query, f"SELECT tenant_id, chain_seq, note FROM {projection.db}.notes "
                                                       "FINAL ORDER BY tenant_id, chain_seq")
        return [(r["tenant_id"], r["chain_seq"], r["note"]) for r in found]
