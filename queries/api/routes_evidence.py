"""Signed checkpoints, inclusion and consistency proofs, and verification keys: what auditors (and admins) read.

Everything is of the token's tenant: a chain_seq or size is one of that tenant's own chain, so another
tenant's answer the same as ones that do not exist. Each proof is checked against its signed root before
it is served (queries/evidence.py). Bad input is a 400: `invalid_chain_seq`, `invalid_size` (not from 1 to
2^63-1), `invalid_range` (chain_seq above size, old_size above new_size); the 404s are documented per route.
"""
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from infra.adapters.http.auth import Principal
from infra.adapters.http.deps import MinSeq, WaitMs, require
from queries.evidence import Evidence

router = APIRouter(tags=["evidence"])
Auditor = Annotated[Principal, require("auditor", "admin")]


async def get_evidence(request: Request) -> Evidence:
    return request.app.state.evidence


EvidenceDep = Annotated[Evidence, Depends(get_evidence)]
ChainSeq = Annotated[int, Query(description="the event's chain_seq in the tenant's chain (from 1)")]
AtLeast = Annotated[int | None, Query(description="the first checkpoint whose tree size is at least this")]
Size = Annotated[int | None, Query(description="the size of a signed checkpoint (default: the latest)")]
OldSize = Annotated[int, Query(description="the size of the signed checkpoint you hold")]
NewSize = Annotated[int | None, Query(description="the size of a later signed checkpoint (default: the latest)")]


def rejection(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Rejection"}}}}


NONE_YET = ("no_checkpoint: the tenant has no signed checkpoint yet; not_checkpointed: a size or chain_seq beyond "
            "the latest signed checkpoint")
NOT_A_CHECKPOINT = "; not_a_checkpoint: no signed checkpoint has exactly that size"
MISMATCH = {500: rejection("evidence_mismatch: the stored leaves or subtree hashes a proof reads do not lead to "
                           "the signed root (named tenant and size); no proof is served")}


@router.get("/v1/evidence/checkpoint", summary="The latest signed checkpoint, or the first of at least `size`",
            responses={404: rejection(NONE_YET)})
async def checkpoint(e: EvidenceDep, principal: Auditor,
                     size: AtLeast = None, min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    """A C2SP signed note (`note`) of the tenant's RFC 9162 tree over its event hashes, the vkey that signs
    it (`key`), what the note says (`origin`, `size`, base64 `root`) and where the chain records it."""
    await e.wait_for(principal.tenant_id, min_seq, wait_ms)
    return await e.checkpoint(principal.tenant_id, size)


@router.get("/v1/evidence/inclusion", summary="An RFC 9162 inclusion proof of one event in a signed checkpoint",
            responses={404: rejection(NONE_YET + NOT_A_CHECKPOINT), **MISMATCH})
async def inclusion(e: EvidenceDep, principal: Auditor, chain_seq: ChainSeq,
                    size: Size = None, min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    """Leaf `leaf_index` (chain_seq − 1) is SHA-256(0x00 ‖ the 32 bytes of `event_hash`); `proof` is
    PATH(leaf_index, tree of `tree_size`) in hex, leaf side first; `checkpoint` signs that tree's root."""
    await e.wait_for(principal.tenant_id, min_seq, wait_ms)
    return await e.inclusion(principal.tenant_id, chain_seq, size)


@router.get("/v1/evidence/consistency", summary="An RFC 9162 consistency proof between two signed checkpoints",
            responses={404: rejection(NONE_YET + NOT_A_CHECKPOINT), **MISMATCH})
async def consistency(e: EvidenceDep, principal: Auditor,
                      old_size: OldSize, new_size: NewSize = None, min_seq: MinSeq = None,
                      wait_ms: WaitMs = 2000) -> dict:
    """PROOF(old_size, tree of new_size) in hex; both sizes are of signed checkpoints, whose notes come with it."""
    await e.wait_for(principal.tenant_id, min_seq, wait_ms)
    return await e.consistency(principal.tenant_id, old_size, new_size)


@router.get("/v1/evidence/keys", summary="Every public key the tenant's checkpoints are signed with")
async def keys(e: EvidenceDep, principal: Auditor, min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    """Each as a C2SP vkey (`<name>+<key ID>+<base64(0x01 ‖ Ed25519 key)>`), with the checkpoints it signed."""
    await e.wait_for(principal.tenant_id, min_seq, wait_ms)
    return await e.keys(principal.tenant_id)
