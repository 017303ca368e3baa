"""The runs read model (Postgres): each run's state, steps, tool calls and totals.

`deadline_at` is what the run's request recorded; whether a run is stuck (past it, not ended) is
the query's to say, against its own now (queries/stuck.py), so no row changes when a deadline passes.

A retention sweep of this store removes its runs' rows from all three tables (projectors/removals.py).
Content fields (labels, errors, reasons) are kept as recorded: a sealed field or withheld marker
stays an object in `labels` (jsonb) and is its compact JSON text in a text column
(infra/adapters/keys/stored.py); queries/content.py opens them when they are read.
"""
from psycopg.types.json import Jsonb

from infra.adapters.keys.stored import column_text as text
from projectors.base import Envelope
from projectors.pg import PostgresProjection, Statement
from projectors.removals import governs, sweep_of

DDL = """
CREATE TABLE IF NOT EXISTS {s}.runs (
    tenant_id text NOT NULL, run_id uuid NOT NULL, agent_id text NOT NULL, project text NOT NULL,
    state text NOT NULL, attempt int NOT NULL DEFAULT 1, budget_micros bigint, labels jsonb NOT NULL,
    waiting_on text[] NOT NULL DEFAULT '{{}}', error text,
    requested_at timestamptz NOT NULL, started_at timestamptz, ended_at timestamptz,
    updated_at timestamptz NOT NULL, version int NOT NULL, last_chain_seq bigint NOT NULL,
    step_count int NOT NULL DEFAULT 0, tool_call_count int NOT NULL DEFAULT 0,
    cost_micros bigint NOT NULL DEFAULT 0, tokens_in bigint NOT NULL DEFAULT 0,
    tokens_out bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, run_id)
);
CREATE INDEX IF NOT EXISTS runs_by_state ON {s}.runs (tenant_id, state, requested_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_by_agent ON {s}.runs (tenant_id, agent_id, requested_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS runs_by_time ON {s}.runs (tenant_id, requested_at DESC, run_id DESC);
ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS deadline_at timestamptz;
CREATE INDEX IF NOT EXISTS runs_overdue ON {s}.runs (tenant_id, deadline_at)
    WHERE deadline_at IS NOT NULL AND state NOT IN ('succeeded', 'failed', 'cancelled');
CREATE TABLE IF NOT EXISTS {s}.steps (
    tenant_id text NOT NULL, step_id uuid NOT NULL, run_id uuid NOT NULL, kind text NOT NULL,
    name text NOT NULL, attempt int NOT NULL, outcome text, error text,
    started_at timestamptz NOT NULL, finished_at timestamptz,
    PRIMARY KEY (tenant_id, run_id, step_id)
);
CREATE INDEX IF NOT EXISTS steps_by_run ON {s}.steps (tenant_id, run_id, started_at);
CREATE TABLE IF NOT EXISTS {s}.tool_calls (
    tenant_id text NOT NULL, tool_call_id uuid NOT NULL, run_id uuid NOT NULL, step_id uuid,
    tool text NOT NULL, risk_tier text NOT NULL, params_digest text NOT NULL, state text NOT NULL,
    decision text, policy_id text, policy_version text, decision_reason text, approval_id uuid,
    result_digest text, error text,
    requested_at timestamptz NOT NULL, decided_at timestamptz, finished_at timestamptz,
    PRIMARY KEY (tenant_id, tool_call_id)
);
CREATE INDEX IF NOT EXISTS tool_calls_by_run ON {s}.tool_calls (tenant_id, run_id, requested_at);
"""

RUN_ENDS = {"run.succeeded": "succeeded", "run.failed": "failed", "run.cancelled": "cancelled",
            "run.force_failed": "failed"}
TOOL_DECISION_STATE = {"ALLOW": "allowed", "DENY": "blocked", "REQUIRE_APPROVAL": "awaiting_approval",
                       "REQUIRE_STEP_UP": "awaiting_step_up", "THROTTLE": "throttled", "EXTERNAL": "awaiting_decision"}
SWEPT_TABLES = ("tool_calls", "steps", "runs")  # every row of each carries its run_id


class RunsProjection(PostgresProjection):
    name = "runs"
    ddl = DDL

    def run_update(self, env: Envelope, assignments: str, *params) -> Statement:
        return (f"UPDATE {self.schema}.runs SET {assignments}, updated_at = %s, version = %s, "
                "last_chain_seq = %s WHERE tenant_id = %s AND run_id = %s",
                (*params, env["recorded_at"], env["aggregate_version"], env["chain_seq"],
                 env["tenant_id"], env["aggregate_id"]))

    def tool_update(self, env: Envelope, assignments: str, *params) -> Statement:
        return (f"UPDATE {self.schema}.tool_calls SET {assignments} WHERE tenant_id = %s AND tool_call_id = %s",
                (*params, env["tenant_id"], env["aggregate_id"]))

    def statements(self, env: Envelope) -> list[Statement]:
        if governs(self.name, env):
            sweep = sweep_of(env)
            return [self.removal(sweep, table, f"DELETE FROM {self.schema}.{table} WHERE tenant_id = %s "
                                               "AND run_id = ANY(%s::uuid[])", (sweep.tenant_id, sweep.run_ids))
                    for table in SWEPT_TABLES]
        p, at, s = env["payload"], env["occurred_at"], self.schema
        match env["type"]:
            case "run.requested":
                return [(f"INSERT INTO {s}.runs (tenant_id, run_id, agent_id, project, state, budget_micros, "
                         "labels, requested_at, updated_at, version, last_chain_seq, deadline_at) "
                         "VALUES (%s, %s, %s, %s, 'requested', %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (env["tenant_id"], env["aggregate_id"], p["agent_id"], p["project"], p["budget_micros"],
                          Jsonb(p["labels"]), at, env["recorded_at"], env["aggregate_version"], env["chain_seq"],
                          p.get("deadline_at")))]  # v1 payloads have none
            case "run.started":
                return [self.run_update(env, "state = 'running', started_at = %s", at)]
            case "run.step_started":
                return [(f"INSERT INTO {s}.steps (tenant_id, step_id, run_id, kind, name, attempt, started_at) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (env["tenant_id"], p["step_id"], env["aggregate_id"], p["kind"], p["name"],
                          p["attempt"], at)),
                        self.run_update(env, "step_count = step_count + 1")]
            case "run.step_finished":
                return [(f"UPDATE {s}.steps SET outcome = %s, error = %s, finished_at = %s "
                         "WHERE tenant_id = %s AND run_id = %s AND step_id = %s",
                         (p["outcome"], text(p["error"]), at, env["tenant_id"], env["aggregate_id"], p["step_id"])),
                        self.run_update(env, "state = state")]
            case "run.waiting_for_approval":
                return [self.run_update(env, "state = 'waiting_for_approval', "
                                             "waiting_on = array_append(waiting_on, %s)", p["approval_id"])]
            case "run.approval_resolved":
                return [self.run_update(
                    env, "waiting_on = array_remove(waiting_on, %s), state = CASE WHEN state = "
                         "'waiting_for_approval' AND cardinality(array_remove(waiting_on, %s)) = 0 "
                         "THEN 'running' ELSE state END", p["approval_id"], p["approval_id"])]
            case "run.resumed":
                return [self.run_update(env, "state = 'running', waiting_on = '{}'")]
            case "run.retried":
                return [self.run_update(env, "state = 'running', attempt = %s, ended_at = NULL, error = NULL",
                                        p["attempt"])]
            case "run.succeeded" | "run.failed" | "run.cancelled" | "run.force_failed":
                error = p.get("error") or p.get("reason")
                return [self.run_update(env, "state = %s, ended_at = %s, error = %s",
                                        RUN_ENDS[env["type"]], at, text(error))]
            case "tool_call.requested":
                return [(f"INSERT INTO {s}.tool_calls (tenant_id, tool_call_id, run_id, step_id, tool, risk_tier, "
                         "params_digest, state, requested_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'requested', %s) "
                         "ON CONFLICT DO NOTHING",
                         (env["tenant_id"], env["aggregate_id"], p["run_id"], p["step_id"], p["tool"],
                          p["risk_tier"], p["params_digest"], at)),
                        (f"UPDATE {s}.runs SET tool_call_count = tool_call_count + 1 "
                         "WHERE tenant_id = %s AND run_id = %s", (env["tenant_id"], p["run_id"]))]
            case "tool_call.policy_decided":
                return [self.tool_update(env, "decision = %s, policy_id = %s, policy_version = %s, "
                                              "decision_reason = %s, decided_at = %s, state = %s",
                                         p["decision"], p["policy_id"], p["policy_version"], text(p["reason"]), at,
                                         TOOL_DECISION_STATE[p["decision"]])]
            case "tool_call.approved":
                return [self.tool_update(env, "state = 'allowed', approval_id = %s", p["approval_id"])]
            case "tool_call.stepped_up":
                return [self.tool_update(env, "state = 'allowed'")]
            case "tool_call.blocked":
                return [self.tool_update(env, "state = 'blocked', error = %s, finished_at = %s", text(p["reason"]),
                                         at)]
            case "tool_call.completed":
                return [self.tool_update(env, "state = 'completed', result_digest = %s, finished_at = %s",
                                         p["result_digest"], at)]
            case "tool_call.failed":
                return [self.tool_update(env, "state = 'failed', error = %s, finished_at = %s", text(p["error"]), at)]
            case "budget.cost_recorded" if p["run_id"]:
                return [(f"UPDATE {s}.runs SET cost_micros = cost_micros + %s, tokens_in = tokens_in + %s, "
                         "tokens_out = tokens_out + %s WHERE tenant_id = %s AND run_id = %s",
                         (p["amount_micros"], p["tokens_in"], p["tokens_out"], env["tenant_id"], p["run_id"]))]
            case _:
                return []
