"""Verifications of the read models against the chain: run one (ops), and read a tenant's recorded results (auditors).

POST /v1/ops/verifications starts one in this serving process (the embedded chdb models can be checked
only here); `runledger verify-readmodels` polls GET /v1/ops/verifications and records each tenant's result
on its chain. GET /v1/evidence/verifications lists what the token's tenant has recorded, newest first:
another tenant's verification answers exactly as one that does not exist.
"""
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from domain.fields import TenantName
from infra.adapters.http.auth import Principal
from infra.adapters.http.deps import Limit, MinSeq, OpsAdmin, WaitMs, require
from infra.adapters.http.errors import Refused
from projectors.verification_job import MODELS, AlreadyVerifying, VerificationJobs
from queries.verifications import Verifications

router = APIRouter(tags=["evidence"])
Auditor = Annotated[Principal, require("auditor", "admin")]
Model = Literal[MODELS]  # type: ignore[valid-type]


async def get_jobs(request: Request) -> VerificationJobs:
    return request.app.state.verification_jobs


async def get_verifications(request: Request) -> Verifications:
    return request.app.state.verifications


JobsDep = Annotated[VerificationJobs, Depends(get_jobs)]
VerificationsDep = Annotated[Verifications, Depends(get_verifications)]


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenants: list[TenantName] | None = Field(None, min_length=1, max_length=1000,
                                             description="the tenants to verify (null: every tenant with events)")
    models: list[Model] = Field(default_factory=lambda: list(MODELS), min_length=1)
    wait_s: float = Field(30.0, ge=0, le=600, description="how long to wait for each model to catch up")


def rejection(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Rejection"}}}}


@router.post("/v1/ops/verifications", status_code=202,
             summary="Verify read models against the chain in this process (one at a time)",
             responses={409: rejection("verification_running: a verification of this deployment is running"),
                        422: rejection("invalid_request: the body is not a list of tenants and read models")})
async def start(body: VerifyRequest, _: OpsAdmin, jobs: JobsDep) -> dict:
    try:
        jobs.start(body.tenants, list(dict.fromkeys(body.models)), body.wait_s)
    except AlreadyVerifying as error:
        raise Refused(409, "verification_running", str(error)) from None
    return jobs.status()


@router.get("/v1/ops/verifications", summary="Progress of the latest verification, and its reports once done",
            responses={404: rejection("not_found: no verification has run in this process")})
async def status(_: OpsAdmin, jobs: JobsDep) -> dict:
    found = jobs.status()
    if found is None:
        raise Refused(404, "not_found", "no verification has run in this process")
    return found


@router.get("/v1/evidence/verifications", summary="The tenant's recorded verifications, newest first")
async def verifications(v: VerificationsDep, principal: Auditor, limit: Limit = 50, cursor: str | None = None,
                        min_seq: MinSeq = None, wait_ms: WaitMs = 2000) -> dict:
    """Each: the chain size verified, per read model its rows, missing, extra, mismatched, the chain_seq it has
    applied (and where it stopped, if it did) and ok, the first problems (model, table, key, kind, columns)."""
    await v.wait_for(principal.tenant_id, min_seq, wait_ms)
    return await v.list(principal.tenant_id, cursor, limit)


@router.get("/v1/evidence/verifications/{verification_id}", summary="One recorded verification of the tenant")
async def verification(verification_id: UUID, v: VerificationsDep, principal: Auditor, min_seq: MinSeq = None,
                       wait_ms: WaitMs = 2000) -> dict:
    await v.wait_for(principal.tenant_id, min_seq, wait_ms)
    found = await v.get(principal.tenant_id, str(verification_id))
    if found is None:
        raise Refused(404, "not_found", f"no verification {verification_id} in this tenant")
    return found
