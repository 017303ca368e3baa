"""The console shows a role exactly what the API lets it read: each view the session grants is one whose
routes answer that role, and each view it withholds is one whose routes refuse it (403)."""

import httpx
import pytest

from infra.adapters.http.auth import ROLES
from infra.entry.client import LedgerClient
from tests.support import token, unique

CALLERS = [(role,) for role in sorted(ROLES)] + [("approver", "auditor"), ("operator", "policy")]


async def probe(api, http, view: str, headers: dict, run_id: str) -> int:
    """The status of each route the view reads, as one: 403 if any refuses the role."""
    if view == "timeline":
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            async with client.stream("GET", "/v1/streams/multiplex", headers=headers,
                                     params={"channel": f"runs/{run_id}"}) as response:
                return response.status_code
    paths = {"approvals": ["/v1/approvals/pending"], "runs": ["/v1/runs", f"/v1/runs/{run_id}"],
             "evidence": ["/v1/evidence/verifications", "/v1/audit/events", "/v1/evidence/checkpoint"],
             "ops": ["/v1/ops/projectors", "/v1/ops/projectors/runs/rebuild"]}[view]
    statuses = {(await http.get(path, headers=headers)).status_code for path in paths}
    return 403 if 403 in statuses else max(statuses)


@pytest.mark.parametrize("tenant_kind", ["customer", "ops"])
async def test_every_view_the_console_grants_is_one_the_api_answers(api, http, tenant_kind):
    tenant = unique("tenant-") if tenant_kind == "customer" else api.settings.ops_tenant
    run = await LedgerClient(http, token(tenant)).send({"type": "RequestRun", "agent_id": "a"})
    assert run.accepted
    checked = []
    for roles in CALLERS + ([("admin", "operator")] if tenant_kind == "ops" else []):
        headers = {"Authorization": f"Bearer {token(tenant, 'someone', roles)}"}
        session = (await http.get("/v1/console/session", headers=headers)).json()
        assert (session["tenant_id"], session["subject"], session["roles"]) == (tenant, "someone", sorted(roles))
        for view, shown in session["views"].items():
            status = await probe(api, http, view, headers, run.body["aggregate_id"])
            assert (status != 403) == shown, (roles, view, status)
            checked.append((roles, view, shown))
    assert len({view for _, view, _ in checked}) == 5
    assert any(shown for *_, shown in checked) and not all(shown for *_, shown in checked)
    assert (await http.get("/v1/console/session")).status_code == 401
