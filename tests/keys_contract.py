"""The KeyStore contract: what the processor and the read side may rely on, whichever store keeps the keys.

Each store's test module subclasses KeyStoreContract (as tests/projection_contract.py is used) and
says how to open a store over the test's rows, with the KEKs given, and how to read those rows back
from the table itself: (tenant_id, key_id) -> (subject, kek_id, wrapped). Every `store()` call of
one test sees the same rows, as processes sharing a database do.
"""
import asyncio
import itertools
from abc import ABC, abstractmethod

import pytest

from infra.adapters.keys import SHREDDED, Content, KeyUnwrapError, SealTampered, UnknownKek
from infra.adapters.keys.cipher import b64url, content_aad, open_sealed, seal, unb64url, unwrap_key
from infra.adapters.keys.port import DataKey, KeyStore

KEK1, KEK2 = bytes(range(32)), bytes(range(100, 132))
OLD = {"kek-1": KEK1}
BOTH = {"kek-1": KEK1, "kek-2": KEK2}
Rows = dict[tuple[str, str], tuple[str, str, bytes]]


class Crash(RuntimeError):
    """What a store's wrap raises once its fuse blows, as a process dying mid-rotation would stop it."""


def fuse(store: KeyStore, calls: int) -> None:
    """Make the store's `calls`-th wrap (and every later one) raise Crash."""
    wrap, count = store.wrap, itertools.count(1)

    def blown(key: bytes, kek_id: str | None = None) -> tuple[str, bytes]:
        if next(count) >= calls:
            raise Crash(f"wrap number {calls} failed")
        return wrap(key, kek_id)
    store.wrap = blown


def usage(rows: Rows) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, kek_id, _ in rows.values():
        counts[kek_id] = counts.get(kek_id, 0) + 1
    return counts


class KeyStoreContract(ABC):
    @abstractmethod
    async def store(self, keks: dict[str, bytes] = OLD, current: str = "kek-1") -> KeyStore:
        """Return an opened store over this test's rows."""

    @abstractmethod
    async def rows(self) -> Rows:
        """Return every row of this test's table, read from the table itself."""

    async def five_keys(self, store: KeyStore) -> dict[tuple[str, str], tuple[str, bytes]]:
        subjects = [("a", "alice"), ("a", "bob"), ("a", "carol"), ("b", "alice"), ("b", "dan")]
        return {ts: await store.key_for(*ts) for ts in subjects}

    async def test_a_subject_keeps_one_key_across_calls_and_stores(self):
        store = await self.store()
        first = await store.key_for("a", "alice")
        again = await store.key_for("a", "alice")
        elsewhere = await (await self.store()).key_for("a", "alice")
        bob = await store.key_for("a", "bob")
        assert (again, elsewhere, len(first[1])) == (first, first, 32)
        assert (bob[0] == first[0], bob[1] == first[1]) == (False, False)
        rows = await self.rows()
        assert sorted((t, k, subject, kek) for (t, k), (subject, kek, _) in rows.items()) == sorted(
            [("a", first[0], "alice", "kek-1"), ("a", bob[0], "bob", "kek-1")])
        wrapped = rows[("a", first[0])][2]
        assert (len(wrapped), first[1] in wrapped, unwrap_key(KEK1, wrapped)) == (40, False, first[1])

    async def test_callers_racing_on_one_subject_all_get_the_same_key(self):
        stores = [await self.store(), await self.store()]
        results = await asyncio.gather(*(stores[i % 2].key_for("a", "carol") for i in range(20)))
        assert set(results) == {results[0]}
        assert [k for (t, k), row in (await self.rows()).items() if row[0] == "carol"] == [results[0][0]]

    async def test_keys_answers_a_batch_and_leaves_absent_ids_out(self):
        store = await self.store()
        alice, bob = await store.key_for("a", "alice"), await store.key_for("a", "bob")
        answer = await store.keys("a", [alice[0], "dk_missing", bob[0], alice[0]])
        assert answer == {alice[0]: alice[1], bob[0]: bob[1]}
        assert (await store.keys("a", []), await store.keys("a", ["dk_missing"])) == ({}, {})

    async def test_key_entries_name_each_keys_subject_in_the_same_one_answer(self):
        store = await self.store()
        alice, bob, b_alice = (await store.key_for("a", "alice"), await store.key_for("a", "bob"),
                               await store.key_for("b", "alice"))
        asked = [alice[0], "dk_missing", bob[0], b_alice[0], alice[0]]
        assert await store.key_entries("a", asked) == {alice[0]: DataKey("alice", alice[1]),
                                                       bob[0]: DataKey("bob", bob[1])}
        assert await store.keys("a", asked) == {alice[0]: alice[1], bob[0]: bob[1]}
        assert (await store.key_entries("a", []), await store.key_entries("b", [alice[0]])) == ({}, {})
        await store.shred("a", "alice")
        assert await (await self.store()).key_entries("a", asked) == {bob[0]: DataKey("bob", bob[1])}

    async def test_content_opens_stored_fields_by_their_keys_subject_without_being_told_it(self):
        content = Content(await self.store())
        alice, bob = await content.seal("a", "alice", "Alice's note"), await content.seal("a", "bob", "Bob's")
        elsewhere = await content.seal("b", "alice", "tenant b's")
        ct = bytearray(unb64url(alice["ct"]))
        ct[0] ^= 1
        tampered = {**alice, "ct": b64url(bytes(ct))}
        values = [alice, bob, "plain text", None, elsewhere, tampered, {**bob, "kid": alice["kid"]}]
        opened = await content.open_stored("a", values)
        assert opened[:5] == ["Alice's note", "Bob's", "plain text", None, SHREDDED]
        assert [type(error) for error in opened[5:]] == [SealTampered, SealTampered]
        await content.store.shred("a", "alice")
        assert await content.open_stored("a", values[:2]) == [SHREDDED, "Bob's"]
        with pytest.raises(KeyUnwrapError):
            await Content(await self.store({"kek-1": KEK2}, "kek-1")).open_stored("a", [bob])

    async def test_shred_deletes_the_subjects_rows_for_real(self):
        store = await self.store()
        alice, bob = await store.key_for("a", "alice"), await store.key_for("a", "bob")
        assert await store.subject_keys("a", "alice") == [alice[0]]
        assert await store.shred("a", "alice") == [alice[0]]
        assert list(await self.rows()) == [("a", bob[0])]
        fresh = await self.store()
        assert (await store.subject_keys("a", "alice"), await fresh.subject_keys("a", "alice")) == ([], [])
        assert await fresh.keys("a", [alice[0], bob[0]]) == {bob[0]: bob[1]}
        assert await store.shred("a", "alice") == []

    async def test_shredding_an_unknown_subject_returns_nothing_and_removes_nothing(self):
        store = await self.store()
        alice = await store.key_for("a", "alice")
        assert (await store.shred("a", "nobody"), await store.shred("b", "alice")) == ([], [])
        assert list(await self.rows()) == [("a", alice[0])]

    async def test_after_a_shred_the_subject_gets_a_new_key_and_old_content_stays_shredded(self):
        store = await self.store()
        key_id, key = await store.key_for("a", "alice")
        sealed = seal("hello", key_id, key, content_aad("a", "alice", key_id))
        await store.shred("a", "alice")
        new_id, new_key = await store.key_for("a", "alice")
        assert (new_id == key_id, new_key == key) == (False, False)
        opened = (await store.keys("a", [key_id])).get(key_id)
        assert open_sealed(sealed, opened, content_aad("a", "alice", key_id)) == SHREDDED

    async def test_one_tenants_keys_never_answer_for_another(self):
        store = await self.store()
        a_alice, b_alice = await store.key_for("a", "alice"), await store.key_for("b", "alice")
        assert (a_alice[0] == b_alice[0], a_alice[1] == b_alice[1]) == (False, False)
        assert await store.keys("b", [a_alice[0], b_alice[0]]) == {b_alice[0]: b_alice[1]}
        assert await store.subject_keys("b", "alice") == [b_alice[0]]
        assert await store.shred("b", "alice") == [b_alice[0]]
        assert await store.keys("a", [a_alice[0]]) == {a_alice[0]: a_alice[1]}
        assert list(await self.rows()) == [("a", a_alice[0])]

    async def test_content_opens_through_the_store_until_shredded_and_not_for_another_subject(self):
        content = Content(await self.store())
        alice, bob = await content.seal("a", "alice", "Alice's note"), await content.seal("a", "bob", "Bob's")
        fields = [("alice", alice), ("bob", bob), ("alice", "plain text")]
        assert await content.open_many("a", fields) == ["Alice's note", "Bob's", "plain text"]
        with pytest.raises(SealTampered):
            await content.open_many("a", [("bob", alice)])
        await content.store.shred("a", "alice")
        assert await content.open_many("a", fields) == [SHREDDED, "Bob's", "plain text"]

    async def test_rotation_rewraps_every_row_and_the_old_kek_alone_then_reads_none(self):
        store = await self.store()
        keys = await self.five_keys(store)
        before = await self.rows()
        assert (await store.rotate_kek(KEK2, "kek-2", batch_size=2), await store.kek_usage()) == (5, {"kek-2": 5})
        after = await self.rows()
        assert (list(after), usage(after)) == (list(before), {"kek-2": 5})
        for at, (_, _, wrapped) in after.items():
            assert (wrapped == before[at][2], unwrap_key(KEK2, wrapped)) == (False, unwrap_key(KEK1, before[at][2]))
            with pytest.raises(KeyUnwrapError):
                unwrap_key(KEK1, wrapped)
        old_only, new_only = await self.store(OLD, "kek-1"), await self.store({"kek-2": KEK2}, "kek-2")
        with pytest.raises(UnknownKek):
            await old_only.keys("a", [keys[("a", "alice")][0]])
        assert await new_only.keys("b", [keys[("b", "dan")][0]]) == {keys[("b", "dan")][0]: keys[("b", "dan")][1]}
        assert await store.rotate_kek(KEK2, "kek-2") == 0
        await store.key_for("a", "erin")
        assert usage(await self.rows()) == {"kek-2": 6}

    async def test_a_rotation_stopped_part_way_leaves_every_key_readable_and_resumes(self):
        store = await self.store()
        keys = await self.five_keys(store)
        assert await store.rotate_kek(KEK2, "kek-2", batch_size=2, limit=3) == 3
        assert usage(await self.rows()) == {"kek-1": 2, "kek-2": 3}
        both = await self.store(BOTH, "kek-2")
        for (tenant, subject), (key_id, key) in keys.items():
            assert await both.keys(tenant, [key_id]) == {key_id: key}
            assert await both.key_for(tenant, subject) == (key_id, key)
        assert (await both.rotate_kek(KEK2, "kek-2"), usage(await self.rows())) == (2, {"kek-2": 5})

    async def test_a_rotation_failing_mid_batch_rolls_back_only_that_batch(self):
        store = await self.store()
        keys = await self.five_keys(store)
        before = await self.rows()
        fuse(store, 4)  # the first batch of two commits; the second fails on its second row, its first rewrapped
        with pytest.raises(Crash):
            await store.rotate_kek(KEK2, "kek-2", batch_size=2)
        rows = await self.rows()
        assert (list(rows), usage(rows)) == (list(before), {"kek-1": 3, "kek-2": 2})
        assert sorted(at for at, row in rows.items() if row == before[at]) == sorted(
            at for at, row in rows.items() if row[1] == "kek-1")
        both = await self.store(BOTH, "kek-2")
        assert {ts: await both.key_for(*ts) for ts in keys} == keys
        assert (await both.rotate_kek(KEK2, "kek-2"), usage(await self.rows())) == (3, {"kek-2": 5})

    async def test_a_kek_that_does_not_match_its_id_is_refused_not_taken_for_shredded(self):
        key_id, _ = await (await self.store()).key_for("a", "alice")
        wrong = await self.store({"kek-1": KEK2}, "kek-1")
        with pytest.raises(KeyUnwrapError):
            await wrong.keys("a", [key_id])
        with pytest.raises(KeyUnwrapError):
            await wrong.key_for("a", "alice")

    async def test_kek_ids_name_one_kek_each_and_the_store_shows_no_key(self):
        store = await self.store()
        with pytest.raises(ValueError, match="already known"):
            await store.rotate_kek(KEK2, "kek-1")
        with pytest.raises(ValueError, match="not among"):
            await self.store(OLD, "kek-9")
        with pytest.raises(ValueError, match="32 bytes"):
            await self.store({"kek-1": KEK1[:16]}, "kek-1")
        assert (store.kek_id, repr(store).split("(", 1)[1]) == ("kek-1", "current_kek_id='kek-1', kek_ids=['kek-1'])")
