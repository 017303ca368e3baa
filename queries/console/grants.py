"""What the console shows a caller: the views its roles open, as the API's own routes gate them.

The page hides what a role cannot do; the API refuses it anyway. These sets restate the routes'
dependencies (`require(...)` in queries/api and streams/routes.py), and tests/e2e/test_console_grants.py
holds each one to the API's answers for every role, so the page cannot drift from what it fronts.
Deciding an approval is per approval (its required role; never its requester; each approver once),
so the page decides that from the caller's roles and the approval itself.
"""
from infra.adapters.http.auth import Principal

VIEWS: dict[str, tuple[str, ...]] = {
    "approvals": ("operator", "admin", "approver"),  # GET /v1/approvals/pending, /v1/approvals/{id}
    "runs": ("operator", "admin"),                   # GET /v1/runs, /v1/runs/{id}
    "timeline": ("operator", "admin", "auditor"),    # a run's channel on /v1/streams/multiplex
    "evidence": ("auditor", "admin"),                # /v1/evidence/inclusion (verify), /v1/evidence/verifications,
                                                     # /v1/audit/events (a run's cost entries)
}


def grants(principal: Principal, ops_admin: bool) -> dict:
    """The caller as the API sees it, and which views the console may show it."""
    held = set(principal.roles)
    views = {view: bool(held.intersection(roles)) for view, roles in VIEWS.items()}
    return {"tenant_id": principal.tenant_id, "subject": principal.subject, "roles": list(principal.roles),
            "ops_admin": ops_admin, "views": {**views, "ops": ops_admin}}
