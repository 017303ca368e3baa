"""The in-memory data-key store passes the KeyStore contract (tests/keys_contract.py)."""
import pytest

pytest.register_assert_rewrite("tests.keys_contract")

from infra.adapters.keys.memory import KeyRows, MemoryKeyStore  # noqa: E402
from tests.keys_contract import OLD, KeyStoreContract, Rows  # noqa: E402


class TestMemoryKeyStore(KeyStoreContract):
    @pytest.fixture(autouse=True)
    def table(self):
        self.table = KeyRows()

    async def store(self, keks: dict[str, bytes] = OLD, current: str = "kek-1") -> MemoryKeyStore:
        return await MemoryKeyStore(keks, current, self.table).open()

    async def rows(self) -> Rows:
        return {at: (row.subject, row.kek_id, row.wrapped) for at, row in sorted(self.table.by_id.items())}
