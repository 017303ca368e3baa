from typing import Annotated

from fastapi import Depends, Query, Request

from commands.api.deps import PrincipalDep
from commands.auth import Principal
from commands.intake import Refused
from queries.readmodels import ReadModels


async def get_read_models(request: Request) -> ReadModels:
    return request.app.state.read_models


def require(*roles: str):
    """A dependency that admits only principals holding one of the roles."""
    async def check(principal: PrincipalDep) -> Principal:
        if not set(roles).intersection(principal.roles):
            raise Refused(403, "missing_role", f"this view needs one of the roles {sorted(roles)}")
        return principal
    return Depends(check)


async def require_ops(request: Request, principal: PrincipalDep) -> Principal:
    """Platform-wide views need an admin of the operations tenant, never a customer tenant's token."""
    if principal.tenant_id != request.app.state.settings.ops_tenant or "admin" not in principal.roles:
        raise Refused(403, "ops_only", "platform views need an admin token of the operations tenant")
    return principal


ReadModelsDep = Annotated[ReadModels, Depends(get_read_models)]
Operator = Annotated[Principal, require("operator", "admin")]
ApprovalViewer = Annotated[Principal, require("operator", "admin", "approver")]
OpsAdmin = Annotated[Principal, Depends(require_ops)]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
MinSeq = Annotated[int | None, Query(ge=1, description="wait until the read model has applied your "
                                                           "tenant's chain up to this chain_seq")]
WaitMs = Annotated[int, Query(ge=0, le=10000, description="how long to wait for min_seq")]
