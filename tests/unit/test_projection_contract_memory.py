"""The Projection contract on the in-memory twin (projectors/memory.py)."""
import pytest

pytest.register_assert_rewrite("tests.projection_contract")

from projectors.memory import MemoryProjection, MemoryStore  # noqa: E402
from tests.projection_contract import Crash, ProjectionContract  # noqa: E402


class Notes(MemoryProjection):
    """The contract's read model: one note per event."""
    name = "notes"
    fuse: int | None = None

    def row(self, env: dict) -> str:
        return env["payload"]["note"]

    def write(self, rows: dict, envelopes: list[dict]) -> None:
        fuse, self.fuse = self.fuse, None
        super().write(rows, envelopes if fuse is None else envelopes[:fuse])
        if fuse is not None:
            raise Crash(f"the row write failed after {fuse} rows")


class TestMemoryProjection(ProjectionContract):
    @pytest.fixture(autouse=True)
    def store(self):
        self.memory = MemoryStore()

    def projection(self, prefix: str) -> Notes:
        return Notes(self.memory, prefix)

    async def rows(self, projection: Notes) -> list[tuple[str, int, str]]:
        return sorted((tenant, seq, note) for (tenant, seq), note in projection.kept.rows.items())
