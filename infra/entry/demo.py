"""A demo workload: content sealed per author, a Cedar policy published, agent runs with tool calls it decides
(ALLOW, a DENY, a two-person REQUIRE_APPROVAL), approvals
granted and expired, costs against a budget, completion, hostile input refused, a legal hold, a
retention sweep that spares it and a shred it refuses; then the tenant's chain is verified from Kafka."""
import asyncio
import hashlib
import time

import httpx

from infra.adapters.http.auth import mint
from infra.entry.client import LedgerClient, Outcome
from infra.entry.demo_evidence import show_evidence
from infra.entry.demo_policy import publish_policy, show_decision, show_policy
from infra.adapters.settings import Settings
from infra.entry.verify import tenant_envelopes, verify_tenant


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Demo:
    def __init__(self, http: httpx.AsyncClient, settings: Settings, tenant: str):
        self.settings, self.tenant = settings, tenant
        secret = settings.jwt_secret.get_secret_value()

        def client(subject: str, *roles: str) -> LedgerClient:
            return LedgerClient(http, mint(secret, tenant, subject, list(roles), settings.jwt_audience))

        self.agent = client("agent:support-bot", "operator")
        self.alice = client("alice", "approver")
        self.bob = client("bob", "approver")
        self.admin = client("ops-admin", "admin")

    async def step(self, who: LedgerClient, label: str, command: dict, **kw) -> Outcome:
        outcome = await who.send(command, **kw)
        verdict = "accepted" if outcome.accepted else f"REJECTED {outcome.body.get('code')}"
        seqs = ",".join(str(e["chain_seq"]) for e in outcome.body.get("events", []))
        extra = f" seq {seqs}" if seqs else f" — {outcome.body.get('reason', '')}"
        if outcome.replayed:
            extra += " (idempotent replay)"
        print(f"  {outcome.status_code} {label:<46} {verdict}{extra}")
        return outcome

    async def tool(self, run_id: str, tool: str, risk: str, decision: str) -> str:
        """Request a call; the processor evaluates the active envelope in the same command."""
        call = await self.step(self.agent, f"request tool call {tool} ({risk})", {
            "type": "RequestToolCall", "run_id": run_id, "tool": tool, "risk_tier": risk,
            "params_digest": digest(f"{tool}-params")})
        show_decision(call, decision)
        return call.id

    async def start_run(self, agent: str, budget: int | None = None) -> str:
        run = await self.step(self.agent, f"request run for {agent}", {
            "type": "RequestRun", "agent_id": agent, "project": "support",
            "budget_micros": budget}, idempotency_key=f"demo-{agent}-{time.time_ns()}")
        await self.step(self.agent, "start run", {"type": "StartRun", "run_id": run.id})
        return run.id

    async def cost(self, run_id: str, micros: int) -> Outcome:
        return await self.step(self.agent, f"record cost {micros} micro-USD", {
            "type": "RecordCost", "run_id": run_id, "provider": "anthropic", "model": "claude",
            "tokens_in": micros // 3, "tokens_out": micros // 10, "amount_micros": micros,
            "currency": "USD"})

    async def run(self) -> None:
        print("content: stored, sealed per author (AES-GCM); the log never holds it in clear")
        await self.step(self.admin, "store this tenant's content", {"type": "SetContentPolicy", "store_content": True})
        print("budget")
        await self.step(self.admin, "set project budget 0.50 USD/month", {
            "type": "SetBudget", "project": "support", "period": "month",
            "limit_micros": 500_000, "currency": "USD"})

        await publish_policy(self)
        print("run 1: allowed tool, a DENY that is final, completion")
        run1 = await self.start_run("support-bot")
        step = await self.step(self.agent, "start llm step", {
            "type": "StartStep", "run_id": run1, "kind": "llm", "name": "plan"})
        await self.cost(run1, 120_000)
        await self.step(self.agent, "finish llm step", {
            "type": "FinishStep", "run_id": run1, "step_id": step.id, "outcome": "succeeded"})
        search = await self.tool(run1, "kb.search", "low", "ALLOW")
        await self.step(self.agent, "complete kb.search", {
            "type": "CompleteToolCall", "tool_call_id": search, "result_digest": digest("hits")})
        drop = await self.tool(run1, "db.drop_table", "critical", "DENY")
        await self.step(self.agent, "try to run the denied tool anyway", {
            "type": "CompleteToolCall", "tool_call_id": drop})
        await self.step(self.agent, "complete run", {"type": "CompleteRun", "run_id": run1})

        print("run 2: a two-person approval the policy requires, granted")
        run2 = await self.start_run("refund-bot")
        refund = await self.tool(run2, "payments.refund", "high", "REQUIRE_APPROVAL")
        await self.step(self.agent, "request approval with 1 approver", {
            "type": "RequestApproval", "run_id": run2, "tool_call_id": refund,
            "action": "refund 40 EUR", "risk_tier": "high", "required_approvals": 1})
        approval = await self.step(self.agent, "request approval (2 approvers)", {
            "type": "RequestApproval", "run_id": run2, "tool_call_id": refund,
            "action": "refund 40 EUR", "risk_tier": "high", "required_approvals": 2})
        grant = {"type": "GrantApproval", "approval_id": approval.id, "reason": "checked"}
        await self.step(self.alice, "alice grants", grant, idempotency_key=f"alice-{approval.id}")
        await self.step(self.alice, "alice grants again (same key)", grant,
                        idempotency_key=f"alice-{approval.id}")
        await self.step(self.alice, "alice grants again (new key)", grant)
        await self.step(self.bob, "bob grants", grant)
        await self.step(self.agent, "complete refund", {
            "type": "CompleteToolCall", "tool_call_id": refund})
        await self.step(self.agent, "complete run", {"type": "CompleteRun", "run_id": run2})

        print("run 3: an approval that expires, then over budget")
        run3 = await self.start_run("deploy-bot")
        deploy = await self.tool(run3, "k8s.deploy", "high", "REQUIRE_APPROVAL")
        expiring = await self.step(self.agent, "request approval expiring in 2 s", {
            "type": "RequestApproval", "run_id": run3, "tool_call_id": deploy,
            "action": "deploy to prod", "risk_tier": "high", "expires_in_seconds": 2})
        await self.wait_for("approval.expired", expiring.id)
        print("  ... the processor's timer appended approval.expired")
        await self.step(self.alice, "alice grants after expiry", {
            "type": "GrantApproval", "approval_id": expiring.id})
        await self.cost(run3, 300_000)
        await self.cost(run3, 300_000)
        await self.step(self.agent, "fail run", {"type": "FailRun", "run_id": run3,
                                                 "error": "deploy not approved"})
        await self.step(self.agent, "retry run", {"type": "RetryRun", "run_id": run3})
        last = await self.step(self.agent, "cancel run", {"type": "CancelRun", "run_id": run3,
                                                          "reason": "superseded"})
        await self.hostile(run3)
        await self.show_read_models(last.body["events"][-1]["chain_seq"])
        await show_policy(self, last.body["events"][-1]["chain_seq"])
        seq = await self.governance(run2)
        await show_evidence(self, run2, seq)

    async def hostile(self, run_id: str) -> None:
        """Input no store could keep, or that two parsers would read differently, is refused before the log."""
        print("hostile input: refused with a reason, nothing appended")
        await self.step(self.agent, "fail run with a NUL in the error", {
            "type": "FailRun", "run_id": run_id, "error": "before\u0000after"})
        await self.step(self.agent, "record cost with amount true", {
            "type": "RecordCost", "run_id": run_id, "provider": "anthropic", "model": "claude",
            "amount_micros": True, "currency": "USD"})
        response = await self.agent.http.post("/v1/commands", content=b'{"type":"CancelRun","type":"FailRun"}',
                                              headers={"Authorization": f"Bearer {self.agent.token}",
                                                       "Content-Type": "application/json"})
        print(f"  {response.status_code} {'a body with a repeated key':<46} REJECTED {response.json()['code']}"
              f" — {response.json()['reason']}")

    async def show_read_models(self, seq: int) -> None:
        """Read back what the projectors built, waiting until they have applied the last command."""
        http, headers = self.agent.http, {"Authorization": f"Bearer {self.admin.token}"}
        runs = (await http.get("/v1/runs", params={"min_seq": seq, "wait_ms": 5000}, headers=headers)).json()
        print("read model: runs (GET /v1/runs)")
        for run in runs["items"]:
            print(f"  {run['agent_id']:<12} {run['state']:<10} attempt {run['attempt']}  steps {run['step_count']}"
                  f"  tool calls {run['tool_call_count']}  cost {run['cost_micros']} micro-USD")

    async def governance(self, held_run: str) -> int:
        """A hold outranks retention: the sweep removes the ended runs, except the one under hold."""
        print("governance: a legal hold, a retention floor, a sweep that spares the hold")
        hold = await self.step(self.admin, "place legal hold on run 2 (refund dispute)", {
            "type": "PlaceLegalHold", "matter": "refund dispute #4711", "reason": "customer complaint",
            "scope": {"kind": "run", "run_id": held_run}})
        await self.step(self.admin, "keep audit records 30 days", {
            "type": "SetRetentionPolicy", "record_class": "audit", "days": 30})
        await self.step(self.admin, "keep runs, approvals and SSE 0 days", {
            "type": "SetRetentionPolicy", "record_class": "operational", "days": 0})
        swept = await self.step(self.admin, "sweep operational records", {
            "type": "SweepRetention", "record_class": "operational"})
        await self.step(self.admin, "sweep again", {"type": "SweepRetention", "record_class": "operational"})
        shred = await self.step(self.admin, "shred agent:support-bot (it acted in the held run)", {
            "type": "ShredSubject", "subject": "agent:support-bot", "reason": "erasure request 2026-117"})
        if shred.status_code != 409 or shred.body.get("code") != "shred_under_hold":
            raise RuntimeError(f"a shred under hold should have been refused: {shred.body}")
        http, headers = self.agent.http, {"Authorization": f"Bearer {self.admin.token}"}
        if not swept.accepted:
            raise RuntimeError(f"the retention sweep was refused: {swept.body}")
        seq = swept.body["events"][-1]["chain_seq"]
        params = {"min_seq": seq, "wait_ms": 5000}
        sweep = (await http.get("/v1/retention/sweeps", params=params, headers=headers)).json()["items"][0]
        print(f"  sweep at chain_seq {sweep['chain_seq']}: removed {sweep['counts']['runs']} runs "
              f"({sweep['counts']['events']} events) from {', '.join(sweep['stores'])}; "
              f"kept by holds {sweep['kept_by_holds']}")
        covers = (await http.get(f"/v1/legal-holds/{hold.id}", params=params, headers=headers)).json()["covers"]
        print(f"  hold {hold.id} keeps: {covers}")
        runs = (await http.get("/v1/runs", params=params, headers=headers)).json()["items"]
        print(f"  runs left in the read model: {[r['agent_id'] for r in runs]}")
        if [r["run_id"] for r in runs] != [held_run]:
            raise RuntimeError(f"the sweep should have left only the held run {held_run}, not {runs}")
        return seq

    async def wait_for(self, event_type: str, aggregate_id: str, deadline_s: float = 20) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            async for env in tenant_envelopes(self.settings, self.tenant):
                if env["type"] == event_type and env["aggregate_id"] == aggregate_id:
                    return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{event_type} for {aggregate_id} did not appear in {deadline_s}s")


async def run_demo(settings: Settings, url: str, tenant: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await Demo(http, settings, tenant).run()
    verdict = await verify_tenant(settings, tenant)
    print(f"chain of tenant {tenant}: {'verified' if verdict.ok else 'BROKEN'}, "
          f"{verdict.count} events, head {verdict.head_hash}")
    return 0 if verdict.ok else 1
