"""The approvals read model (Postgres): the pending queue, votes so far, decisions and expiries.

A retention sweep of this store removes the approvals of its runs and their votes (projectors/removals.py).
Content fields (the action, vote and denial reasons) are kept as recorded, a sealed field or withheld
marker as its compact JSON text (infra/adapters/keys/stored.py); queries/content.py opens them.
"""
from infra.adapters.keys.stored import column_text as text
from projectors.base import Envelope
from projectors.pg import PostgresProjection, Statement
from projectors.removals import governs, sweep_of

DDL = """
CREATE TABLE IF NOT EXISTS {s}.approvals (
    tenant_id text NOT NULL, approval_id uuid NOT NULL, run_id uuid NOT NULL, tool_call_id uuid,
    action text NOT NULL, risk_tier text NOT NULL, required_role text NOT NULL,
    required_approvals int NOT NULL, requested_by text NOT NULL, requested_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL, state text NOT NULL, approvers text[] NOT NULL DEFAULT '{{}}',
    decided_by text, decision_reason text, decided_at timestamptz, last_chain_seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, approval_id)
);
CREATE INDEX IF NOT EXISTS approvals_queue ON {s}.approvals (tenant_id, state, required_role, requested_at, approval_id);
CREATE TABLE IF NOT EXISTS {s}.approval_votes (
    tenant_id text NOT NULL, approval_id uuid NOT NULL, approver text NOT NULL, reason text,
    voted_at timestamptz NOT NULL, chain_seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, approval_id, approver)
);
"""


class ApprovalsProjection(PostgresProjection):
    name = "approvals"
    ddl = DDL

    def update(self, env: Envelope, assignments: str, *params) -> Statement:
        return (f"UPDATE {self.schema}.approvals SET {assignments}, last_chain_seq = %s "
                "WHERE tenant_id = %s AND approval_id = %s",
                (*params, env["chain_seq"], env["tenant_id"], env["aggregate_id"]))

    def statements(self, env: Envelope) -> list[Statement]:
        if governs(self.name, env):
            return self.swept(env)
        p, at, s = env["payload"], env["occurred_at"], self.schema
        match env["type"]:
            case "approval.requested":
                return [(f"INSERT INTO {s}.approvals (tenant_id, approval_id, run_id, tool_call_id, action, "
                         "risk_tier, required_role, required_approvals, requested_by, requested_at, expires_at, "
                         "state, last_chain_seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s) "
                         "ON CONFLICT DO NOTHING",
                         (env["tenant_id"], env["aggregate_id"], p["run_id"], p["tool_call_id"], text(p["action"]),
                          p["risk_tier"], p["required_role"], p["required_approvals"], p["requested_by"], at,
                          p["expires_at"], env["chain_seq"]))]
            case "approval.vote_recorded":
                return [(f"INSERT INTO {s}.approval_votes VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (env["tenant_id"], env["aggregate_id"], p["approver"], text(p["reason"]), at,
                          env["chain_seq"])),
                        self.update(env, "approvers = array_append(approvers, %s)", p["approver"])]
            case "approval.granted":
                return [self.update(env, "state = 'granted', decided_at = %s, decided_by = %s",
                                    at, ",".join(p["approvers"]))]
            case "approval.denied":
                return [self.update(env, "state = 'denied', decided_at = %s, decided_by = %s, decision_reason = %s",
                                    at, p["approver"], text(p["reason"]))]
            case "approval.expired":
                return [self.update(env, "state = 'expired', decided_at = %s", p["expired_at"])]
            case _:
                return []

    def swept(self, env: Envelope) -> list[Statement]:
        """Remove the votes, then the approvals, of the swept runs."""
        sweep, s = sweep_of(env), self.schema
        params = (sweep.tenant_id, sweep.run_ids)
        return [self.removal(sweep, "approval_votes",
                             f"DELETE FROM {s}.approval_votes v USING {s}.approvals a WHERE v.tenant_id = %s "
                             "AND a.tenant_id = v.tenant_id AND a.approval_id = v.approval_id "
                             "AND a.run_id = ANY(%s::uuid[])", params),
                self.removal(sweep, "approvals", f"DELETE FROM {s}.approvals WHERE tenant_id = %s "
                                                 "AND run_id = ANY(%s::uuid[])", params)]
