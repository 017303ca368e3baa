// A run's timeline: every event of its channel (steps, tool calls and their decisions, approvals) in
// chain order with chain_seq and hash, its cost entries (for roles that read the audit store), its
// totals (for roles that read runs), and per event a check of its inclusion proof (auditor, admin).
import {ApiError} from "./api.js";
import {ago, debounce, h, mark, micros, replace, short, text, when} from "./dom.js";
import {verifyInclusion} from "./verify.js";

const SUMMARY = [["state", "State"], ["agent_id", "Agent"], ["project", "Project"], ["attempt", "Attempt"],
                 ["step_count", "Steps"], ["tool_call_count", "Tool calls"], ["tokens_in", "Tokens in"],
                 ["tokens_out", "Tokens out"]];

export class Timeline {
  constructor(ctx, runId, {compact = false} = {}) {
    this.ctx = ctx;
    this.runId = runId;
    this.compact = compact;
    this.channel = `runs/${runId}`;
    this.rows = new Map(); // chain_seq → its <tr>
    this.tools = new Map(); // tool_call_id → tool name, to name a call in its later events
    this.highest = 0;
    this.refreshSoon = debounce(() => this.refresh(), 100);
  }

  mount(element) {
    const views = this.ctx.me.views;
    this.status = h("p", {class: "status", role: "status"});
    this.summary = h("dl", {class: "summary-grid"});
    this.body = h("tbody");
    const heading = this.compact ? h("h3", {}, "Run timeline") : h("h2", {}, "Timeline");
    const head = h("tr", {}, h("th", {scope: "col"}, "chain_seq"), h("th", {scope: "col"}, "Event"),
                   h("th", {scope: "col"}, "Details"), this.compact ? null : h("th", {scope: "col"}, "Recorded"),
                   h("th", {scope: "col"}, "Hash"), views.evidence ? h("th", {scope: "col"}, "Verify") : null);
    replace(element, views.runs ? this.summary : null, heading, this.status,
            h("div", {class: "table-scroll"},
              this.table = h("table", {class: "timeline stack", "aria-label": `Events of run ${this.runId}`},
                h("thead", {}, head), this.body)));
    this.unsubscribe = this.ctx.stream.on(this.channel, (message) => this.onMessage(message));
    this.refresh();
    return {[this.channel]: 0};
  }

  unmount() {
    this.unsubscribe?.();
  }

  onMessage(message) {
    if (message.kind === "event") {
      this.add(message.envelope);
      this.refreshSoon();
      mark("console:live-update");
    } else if (message.kind === "subscribed") {
      this.waiting = false;
      this.status.textContent = "Following this run live.";
    } else if (message.kind === "notice") {
      this.status.textContent = `Replay incomplete (${message.reason}): events up to position ${message.resumes_after} ` +
        "are no longer kept for streams; the audit search has them.";
    } else if (message.kind === "refused") {
      this.waiting = message.retrying;
      this.status.textContent = message.status !== 404 ? message.reason : message.retrying
        ? "This run is not in the stream yet (a run just requested can take a moment); trying again…"
        : "No such run in this tenant.";
    }
  }

  // Totals (runs view) and cost entries (audit store), read as of the last event shown.
  async refresh() {
    const views = this.ctx.me.views;
    const minSeq = this.highest || null;
    try {
      if (views.runs) this.showSummary(await this.ctx.api.get(`/v1/runs/${this.runId}`, {min_seq: minSeq, wait_ms: 5000}));
      if (views.evidence) {
        const costs = await this.ctx.api.get("/v1/audit/events", {run_id: this.runId, type: "budget.cost_recorded",
                                                                  limit: 500, min_seq: minSeq, wait_ms: 5000});
        for (const item of costs.items) this.add(item);
      }
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.status === 404 && this.waiting) return; // the stream is asking again; it says so
      this.status.textContent = error.status === 404 ? "No such run in this tenant." : `Could not read the run: ${error.message}`;
    }
  }

  showSummary(run) {
    const items = SUMMARY.map(([key, label]) => [label, run[key]]);
    items.push(["Cost", micros(run.cost_micros)], ["Requested", `${when(run.requested_at)} (${ago(run.requested_at)})`]);
    replace(this.summary, items.map(([label, value]) => h("div", {}, h("dt", {}, label), h("dd", {}, value ?? ""))));
    mark("console:first-render");
  }

  add(envelope) {
    const seq = envelope.chain_seq;
    if (this.rows.has(seq)) return;
    this.highest = Math.max(this.highest, seq);
    if (envelope.type === "tool_call.requested") this.tools.set(envelope.aggregate_id, envelope.payload.tool);
    const row = this.row(envelope);
    this.rows.set(seq, row);
    const later = [...this.rows.keys()].filter((s) => s > seq).sort((a, b) => a - b)[0];
    this.body.insertBefore(row, later === undefined ? null : this.rows.get(later));
    const names = [...this.table.querySelectorAll("thead th")].map((th) => th.textContent);
    [...row.children].forEach((cell, i) => { cell.dataset.label = names[i]; });
    mark("console:first-render");
  }

  row(envelope) {
    const views = this.ctx.me.views;
    const cells = [h("td", {class: "num"}, envelope.chain_seq), h("td", {}, h("code", {}, envelope.type)),
                   h("td", {}, this.describe(envelope)),
                   this.compact ? null : h("td", {}, when(envelope.recorded_at)),
                   h("td", {}, h("code", {title: envelope.hash}, short(envelope.hash, this.compact ? 8 : 12)))];
    if (views.evidence) {
      const result = h("span", {class: "verdict", role: "status"});
      const button = h("button", {type: "button", class: "small",
                                  "aria-label": `Verify event ${envelope.chain_seq}`,
                                  onclick: () => this.verify(envelope, button, result)}, "Verify");
      cells.push(h("td", {}, button, " ", result));
    }
    return h("tr", {dataset: {chainSeq: envelope.chain_seq, type: envelope.type}}, cells);
  }

  async verify(envelope, button, result) {
    button.disabled = true;
    result.textContent = "checking…";
    try {
      const answer = await this.ctx.api.get("/v1/evidence/inclusion", {chain_seq: envelope.chain_seq});
      const checked = await verifyInclusion(answer, envelope.hash);
      result.textContent = `✓ included in the signed tree of size ${checked.treeSize}; signature ${checked.signature}`;
      result.title = `root ${checked.root}, key ${checked.key}`;
      result.className = "verdict ok";
    } catch (error) {
      const pending = error instanceof ApiError && error.status === 404;
      result.textContent = pending ? `not yet in a signed checkpoint (${error.message})` : `✗ ${error.message}`;
      result.className = pending ? "verdict" : "verdict bad";
    } finally {
      button.disabled = false;
    }
  }

  describe(envelope) {
    const p = envelope.payload || {};
    const tool = this.tools.get(envelope.aggregate_id);
    const call = tool ? `${tool}: ` : "";
    switch (envelope.type) {
      case "run.requested": return `agent ${p.agent_id}, project ${p.project}`;
      case "run.step_started": return `${p.kind} step “${p.name}” (attempt ${p.attempt})`;
      case "run.step_finished": return `${p.outcome}${p.error ? ": " + text(p.error) : ""}`;
      case "run.waiting_for_approval": return `waits for approval ${short(p.approval_id, 8)}`;
      case "run.approval_resolved": return `approval ${short(p.approval_id, 8)} ${p.outcome}`;
      case "run.failed": case "run.force_failed": return text(p.error || p.reason);
      case "run.cancelled": case "run.resumed": return text(p.reason);
      case "tool_call.requested": return `${p.tool}, risk ${p.risk_tier}`;
      case "tool_call.policy_decided":
        return `${call}${p.decision} by ${p.policy_id ?? "no policy"}${p.policy_version ? "@" + p.policy_version : ""}` +
          `${p.determining?.length ? " (" + p.determining.join(", ") + ")" : ""}: ${text(p.reason)}`;
      case "tool_call.approved": return `${call}approved (approval ${short(p.approval_id, 8)})`;
      case "tool_call.blocked": return `${call}blocked: ${text(p.reason)}`;
      case "tool_call.completed": return `${call}completed`;
      case "tool_call.failed": return `${call}failed: ${text(p.error)}`;
      case "tool_call.violation_recorded": return `${p.tool}: violation (${p.risk_tier})`;
      case "approval.requested":
        return `${p.required_approvals} × ${p.required_role} for “${text(p.action)}”, risk ${p.risk_tier}`;
      case "approval.vote_recorded": return `vote by ${p.approver}${p.reason ? ": " + text(p.reason) : ""}`;
      case "approval.granted": return `granted by ${(p.approvers || []).join(", ")}`;
      case "approval.denied": return `denied by ${p.approver}: ${text(p.reason)}`;
      case "approval.expired": return `expired at ${when(p.expired_at)}`;
      case "budget.cost_recorded":
        return `${micros(p.amount_micros, p.currency)} ${p.provider}/${p.model}, tokens ${p.tokens_in} in, ${p.tokens_out} out`;
      default: return "";
    }
  }
}
