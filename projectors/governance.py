"""The governance read model (Postgres): legal holds and their history, retention policies, sweeps.

Everything here is a fold of governance events on the tenants' chains, so holds survive restarts
and rebuilds. These rows are never swept: they are how an auditor sees every removal.
"""
from psycopg.types.json import Jsonb

from projectors.base import Envelope
from projectors.pg import PostgresProjection, Statement

DDL = """
CREATE TABLE IF NOT EXISTS {s}.legal_holds (
    tenant_id text NOT NULL, hold_id uuid NOT NULL, matter text NOT NULL, reason text NOT NULL,
    scope jsonb NOT NULL, placed_by text NOT NULL, platform boolean NOT NULL,
    placed_at timestamptz NOT NULL, placed_seq bigint NOT NULL, state text NOT NULL,
    released_by text, released_at timestamptz, release_reason text, released_seq bigint,
    PRIMARY KEY (tenant_id, hold_id)
);
CREATE INDEX IF NOT EXISTS legal_holds_by_time ON {s}.legal_holds (tenant_id, placed_seq DESC);
CREATE TABLE IF NOT EXISTS {s}.hold_history (
    tenant_id text NOT NULL, hold_id uuid NOT NULL, chain_seq bigint NOT NULL, type text NOT NULL,
    actor text NOT NULL, reason text NOT NULL, recorded_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, hold_id, chain_seq)
);
CREATE TABLE IF NOT EXISTS {s}.retention_policies (
    tenant_id text NOT NULL, record_class text NOT NULL, days int NOT NULL, policy_version int NOT NULL,
    set_by text NOT NULL, set_at timestamptz NOT NULL, chain_seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, record_class)
);
CREATE TABLE IF NOT EXISTS {s}.sweeps (
    tenant_id text NOT NULL, chain_seq bigint NOT NULL, record_class text NOT NULL, stores text[] NOT NULL,
    policy_version int NOT NULL, days int NOT NULL, cutoff timestamptz NOT NULL, run_ids uuid[] NOT NULL,
    counts jsonb NOT NULL, recorded_from timestamptz NOT NULL, recorded_to timestamptz NOT NULL,
    kept_by_holds jsonb NOT NULL, swept_by text NOT NULL, swept_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, chain_seq)
);
"""


class GovernanceProjection(PostgresProjection):
    name = "governance"
    ddl = DDL

    def history(self, env: Envelope, reason: str) -> Statement:
        return (f"INSERT INTO {self.schema}.hold_history VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (env["tenant_id"], env["aggregate_id"], env["chain_seq"], env["type"], env["actor"]["subject"],
                 reason, env["recorded_at"]))

    def statements(self, env: Envelope) -> list[Statement]:
        p, s, tenant, seq = env["payload"], self.schema, env["tenant_id"], env["chain_seq"]
        match env["type"]:
            case "legal_hold.placed":
                return [(f"INSERT INTO {s}.legal_holds (tenant_id, hold_id, matter, reason, scope, placed_by, "
                         "platform, placed_at, placed_seq, state) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'active') "
                         "ON CONFLICT DO NOTHING",
                         (tenant, env["aggregate_id"], p["matter"], p["reason"], Jsonb(p["scope"]), p["placed_by"],
                          p["platform"], env["recorded_at"], seq)),
                        self.history(env, p["reason"])]
            case "legal_hold.released":
                return [(f"UPDATE {s}.legal_holds SET state = 'released', released_by = %s, released_at = %s, "
                         "release_reason = %s, released_seq = %s WHERE tenant_id = %s AND hold_id = %s",
                         (p["released_by"], env["recorded_at"], p["reason"], seq, tenant, env["aggregate_id"])),
                        self.history(env, p["reason"])]
            case "retention.policy_set":
                return [(f"INSERT INTO {s}.retention_policies VALUES (%s, %s, %s, %s, %s, %s, %s) "
                         "ON CONFLICT (tenant_id, record_class) DO UPDATE SET days = excluded.days, "
                         "policy_version = excluded.policy_version, set_by = excluded.set_by, "
                         "set_at = excluded.set_at, chain_seq = excluded.chain_seq",
                         (tenant, p["record_class"], p["days"], p["policy_version"], env["actor"]["subject"],
                          env["recorded_at"], seq))]
            case "retention.swept":
                return [(f"INSERT INTO {s}.sweeps VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                         "ON CONFLICT DO NOTHING",
                         (tenant, seq, p["record_class"], p["stores"], p["policy_version"], p["days"], p["cutoff"],
                          p["run_ids"], Jsonb(p["counts"]), p["recorded_from"], p["recorded_to"],
                          Jsonb(p["kept_by_holds"]), env["actor"]["subject"], env["recorded_at"]))]
            case _:
                return []
