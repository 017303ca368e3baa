"""The data keys a batch needs, fetched before it is decided, and destroyed once a shred is on the log.

Deciding is pure (domain/content.py), so the processor fetches every key a batch could seal with
before the transaction opens: the author's key for each content command of a tenant that stores
content, and the key ids of each subject a ShredSubject names. Keys are destroyed only after the
transaction that records the shred commits; a successor that takes the partition over destroys
again every key the log says was shredded, so a crash in between leaves no key behind.
"""
import asyncio
import logging
from typing import Any, Iterable

from domain.content import CONTENT_COMMANDS, KeyRing
from domain.ledger import TenantLedger
from infra.adapters.keys import KeyStore
from infra.adapters.keys.cipher import content_aad, seal

log = logging.getLogger("runledger.processor")
SHREDDED = "retention.subject_shredded"


class ContentKeys:
    def __init__(self, store: KeyStore | None):
        self.store = store

    async def rings(self, ledger_of, commands: list[dict[str, Any]]) -> dict[str, KeyRing]:
        """One key ring per tenant of the batch that needs one (none without a key store)."""
        if self.store is None:
            return {}
        authors, shreds = set(), set()
        opting_in = {c["tenant_id"] for c in commands
                     if c["body"].get("type") == "SetContentPolicy" and c["body"].get("store_content")}
        for c in commands:
            tenant, kind = c["tenant_id"], c["body"].get("type")
            if kind == "ShredSubject":
                shreds.add((tenant, c["body"]["subject"]))
            elif kind in CONTENT_COMMANDS and (tenant in opting_in or ledger_of(tenant).stores_content):
                authors.add((tenant, c["actor"]["subject"]))
        if not authors and not shreds:
            return {}
        rings: dict[str, KeyRing] = {}

        def ring(tenant: str) -> KeyRing:
            return rings.setdefault(tenant, KeyRing(tenant, {}, seal, content_aad))
        authors, shreds = sorted(authors), sorted(shreds)
        keys = await asyncio.gather(*(self.store.key_for(t, s) for t, s in authors))
        held = await asyncio.gather(*(self.store.subject_keys(t, s) for t, s in shreds))
        for (tenant, subject), key in zip(authors, keys):
            ring(tenant).keys[subject] = key
        for (tenant, subject), ids in zip(shreds, held):
            ring(tenant).shreddable[subject] = ids
        return rings

    async def destroy(self, envelopes: Iterable[dict[str, Any]]) -> None:
        """After the commit: destroy the keys each recorded shred names."""
        if self.store is None:
            return
        for env in envelopes:
            if env["type"] == SHREDDED and env["payload"]["key_ids"]:
                await self.store.forget(env["tenant_id"], env["payload"]["key_ids"])

    async def destroy_shredded(self, ledgers: Iterable[TenantLedger]) -> None:
        """On a takeover: make sure every key the log says was shredded is gone (idempotent)."""
        if self.store is None:
            return
        for ledger in ledgers:
            if ids := ledger.shredded_keys():
                await self.store.forget(ledger.tenant_id, ids)
