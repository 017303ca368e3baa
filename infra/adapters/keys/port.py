"""The data-key store: one AES-256 data key per (tenant, data subject), wrapped under a KEK (docs/adr/0008).

Two adapters pass one contract suite (tests/keys_contract.py): PostgreSQL (infra/adapters/keys/postgres.py,
what runs) and an in-memory twin (infra/adapters/keys/memory.py). What callers may rely on:

- `key_for` returns the subject's current key, creating it if there is none; callers racing on the
  same subject, in one process or several, all get the same key.
- `keys` answers a batch of key ids in one round trip; an id that is absent (never existed, or
  shredded, or another tenant's) is absent from the answer. A key that exists but cannot be
  unwrapped raises (UnknownKek, KeyUnwrapError): a configuration fault is never shown as shredded.
  `key_entries` is the same round trip answering each key with the subject its row names, so a
  reader can build a field's AAD without knowing who wrote it (`keys` is `key_entries` less subjects).
- `shred` deletes the subject's keys for real and returns their ids. It does not ask about legal
  holds: the caller (the ShredSubject handler) must, before it calls it.
- Every row names the KEK that wrapped it. `rotate_kek` makes the new KEK current at once (new keys
  are wrapped under it) and rewraps the other rows in batches, one transaction each; an interrupted
  rotation leaves every row readable with the KEKs it names, and running it again finishes the rest.
- Every method is scoped to one tenant: a key of tenant A is never returned for tenant B.
- Nothing here caches keys or logs them; the KEKs and keys never appear in an exception message.
"""
import re
from abc import ABC, abstractmethod
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from infra.adapters.keys.cipher import (KeyUnwrapError, SealError, check_key, content_aad, is_sealed, open_sealed,
                                        seal, unwrap_key, wrap_key)

KEK_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class DataKey(NamedTuple):
    """One data key as `key_entries` answers it: the subject its row belongs to, and the key."""
    subject: str
    key: bytes


class KeyStoreError(Exception):
    """Base of the key store's own errors."""


class UnknownKek(KeyStoreError):
    """A row is wrapped under a KEK this store was not given (e.g. an old KEK removed before rotation ended)."""


class KeyStore(ABC):
    """Data keys by (tenant, subject). Constructed with every KEK it may meet, by id, and the current one's id."""

    def __init__(self, keks: Mapping[str, bytes], current_kek_id: str):
        self.keks: dict[str, bytes] = {}
        for kek_id, kek in keks.items():
            self.add_kek(kek_id, kek)
        if current_kek_id not in self.keks:
            raise ValueError(f"the current KEK {current_kek_id!r} is not among the KEKs given ({sorted(self.keks)})")
        self.kek_id = current_kek_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(current_kek_id={self.kek_id!r}, kek_ids={sorted(self.keks)})"

    def add_kek(self, kek_id: str, kek: bytes) -> None:
        if not isinstance(kek_id, str) or not KEK_ID.match(kek_id):
            raise ValueError(f"a KEK id matches {KEK_ID.pattern}")
        check_key(kek, "KEK")
        if self.keks.get(kek_id, kek) != kek:
            raise ValueError(f"KEK id {kek_id!r} is already known with other key bytes; give the new KEK a new id")
        self.keks[kek_id] = bytes(kek)

    # -- wrapping (one place, so a test can break it mid-rotation) ------------------------------
    def wrap(self, key: bytes, kek_id: str | None = None) -> tuple[str, bytes]:
        """Wrap a data key under the current KEK (or the one named); return (kek_id, wrapped)."""
        kek_id = kek_id or self.kek_id
        return kek_id, wrap_key(self.keks[kek_id], key)

    def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        kek = self.keks.get(kek_id)
        if kek is None:
            raise UnknownKek(f"a data key is wrapped under KEK {kek_id!r}, which this store was not given "
                             f"(it knows {sorted(self.keks)}); add it to RUNLEDGER_PREVIOUS_KEKS")
        try:
            return unwrap_key(kek, wrapped)
        except KeyUnwrapError:
            raise KeyUnwrapError(f"a data key does not unwrap under KEK {kek_id!r}: that id names other key "
                                 f"bytes than the ones that wrapped it, or the row was altered") from None

    # -- the port ---------------------------------------------------------------------------------
    async def open(self) -> "KeyStore":
        """Create what the store needs if missing (idempotent); return self."""
        return self

    @abstractmethod
    async def key_for(self, tenant_id: str, subject: str) -> tuple[str, bytes]:
        """Return (key_id, key): the subject's current data key, created if it has none."""

    @abstractmethod
    async def key_entries(self, tenant_id: str, key_ids: Iterable[str]) -> dict[str, DataKey]:
        """Return {key_id: (subject, key)} for those of key_ids this tenant still has; one round trip."""

    async def keys(self, tenant_id: str, key_ids: Iterable[str]) -> dict[str, bytes]:
        """Return {key_id: key} for those of key_ids this tenant still has; one round trip."""
        return {key_id: entry.key for key_id, entry in (await self.key_entries(tenant_id, key_ids)).items()}

    @abstractmethod
    async def subject_keys(self, tenant_id: str, subject: str) -> list[str]:
        """Return the ids of the subject's keys, sorted (empty if it has none)."""

    @abstractmethod
    async def shred(self, tenant_id: str, subject: str) -> list[str]:
        """Delete the subject's keys (the rows, not a flag) and return their ids, sorted; [] if none."""

    @abstractmethod
    async def forget(self, tenant_id: str, key_ids: Iterable[str]) -> list[str]:
        """Really delete these data keys of the tenant (those a recorded shred names); return the ids deleted."""

    @abstractmethod
    async def rewrap_batch(self, kek_id: str, size: int) -> int:
        """Rewrap up to size rows not wrapped under kek_id, in one transaction; return how many."""

    @abstractmethod
    async def kek_usage(self) -> dict[str, int]:
        """Return how many rows each KEK id wraps: a rotation is complete when only the new id is left."""

    async def rotate_kek(self, new_kek: bytes, new_kek_id: str, batch_size: int = 500,
                         limit: int | None = None) -> int:
        """Make new_kek current and rewrap every row not under it (at most limit rows); return the count.

        Each batch commits on its own; stopping anywhere leaves each row under the KEK it names, and
        calling this again (with the same new KEK) carries on from there.
        """
        if batch_size < 1 or (limit is not None and limit < 0):
            raise ValueError("batch_size is at least 1 and limit, if given, at least 0")
        self.add_kek(new_kek_id, new_kek)
        self.kek_id = new_kek_id
        done = 0
        while limit is None or done < limit:
            size = batch_size if limit is None else min(batch_size, limit - done)
            rewrapped = await self.rewrap_batch(new_kek_id, size)
            if rewrapped == 0:
                break
            done += rewrapped
        return done


def check_scope(tenant_id: str, subject: str | None = None) -> None:
    if not isinstance(tenant_id, str) or not tenant_id:
        raise ValueError("a data key is scoped to a non-empty tenant id")
    if subject is not None and (not isinstance(subject, str) or not subject):
        raise ValueError("a data key belongs to a non-empty data subject")


def unique_ids(key_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(key_ids))
    if any(not isinstance(k, str) for k in ids):
        raise ValueError("key ids are strings")
    return ids


class Content:
    """Seal and open content fields through a KeyStore: what the processor and the read side call.

    `seal` is for the processor (one field of one subject). `open_many` is for a read model showing
    many fields at once: it fetches every key it needs in one `keys` call; plain (unsealed) values
    pass through unchanged, fields whose key is gone show SHREDDED.
    """

    def __init__(self, store: KeyStore):
        self.store = store

    async def seal(self, tenant_id: str, subject: str, plaintext: str) -> dict[str, str]:
        key_id, key = await self.store.key_for(tenant_id, subject)
        return seal(plaintext, key_id, key, content_aad(tenant_id, subject, key_id))

    async def open_many(self, tenant_id: str, fields: Sequence[tuple[str, Any]]) -> list[Any]:
        """For each (subject, value): the plaintext, SHREDDED, or the value itself if it is not sealed."""
        wanted = [value["kid"] for _, value in fields if is_sealed(value)]
        keys = await self.store.keys(tenant_id, wanted) if wanted else {}
        return [open_sealed(value, keys.get(value["kid"]), content_aad(tenant_id, subject, value["kid"]))
                if is_sealed(value) else value for subject, value in fields]

    async def open_stored(self, tenant_id: str, values: Sequence[Any]) -> list[Any]:
        """For each value: a sealed field's plaintext, SHREDDED if its key is gone, or the SealError it raised.

        For readers that do not know who wrote each field (a read model row): the AAD's subject is
        the one the key's row names. One `key_entries` call for the lot; an error is returned in
        the field's place, not raised, so one tampered field spoils no other. A value that is not
        a sealed field comes back as it is. UnknownKek and KeyUnwrapError (a fault of the KEKs
        given, not of one field) are raised.
        """
        wanted = [value["kid"] for value in values if is_sealed(value)]
        entries = await self.store.key_entries(tenant_id, wanted) if wanted else {}
        return [self.open_one(tenant_id, value, entries.get(value["kid"])) if is_sealed(value) else value
                for value in values]

    @staticmethod
    def open_one(tenant_id: str, value: dict[str, str], entry: DataKey | None) -> str | SealError:
        try:
            if entry is None:  # shredded (or never this tenant's): open_sealed still checks the field's shape
                return open_sealed(value, None, b"")
            return open_sealed(value, entry.key, content_aad(tenant_id, entry.subject, value["kid"]))
        except SealError as error:
            return error
