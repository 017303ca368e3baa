// Ops (an admin of the ops tenant): projector lag per partition and status, held tenants and why,
// rebuilds with progress, the latest read-model verification per tenant, and health in detail.
// Lag and health are not events of any chain, so they are read again every few seconds.
import {ApiError} from "./api.js";
import {h, labelled, mark, replace, when} from "./dom.js";

const REFRESH_MS = 2000;
const PROGRESS_MS = 1000;

export class OpsView {
  constructor(ctx) {
    this.ctx = ctx;
    this.timers = [];
    this.rebuilding = new Map(); // projector → its progress element
  }

  mount(main) {
    this.lagStatus = h("p", {class: "status", role: "status"});
    this.lagBody = h("tbody");
    this.held = h("div", {});
    this.rebuilds = h("div", {class: "rebuilds"});
    this.health = h("dl", {class: "summary-grid"});
    this.verification = h("div", {});
    replace(main, h("h1", {tabindex: "-1"}, "Ops"),
      h("section", {"aria-labelledby": "lag-h"}, h("h2", {id: "lag-h"}, "Projector lag per partition"), this.lagStatus,
        h("div", {class: "table-scroll"}, this.lagTable = h("table", {class: "lag stack",
                                                                      "aria-label": "Projector lag per partition"},
          h("thead", {}, h("tr", {}, ["Projector", "Partition", "Position", "Log end", "Behind (events)",
                                      "Behind (s)", "Status", "Held tenants"].map((c) => h("th", {scope: "col"}, c)))),
          this.lagBody))),
      h("section", {"aria-labelledby": "held-h"}, h("h2", {id: "held-h"}, "Held tenants"), this.held),
      h("section", {"aria-labelledby": "rebuild-h"}, h("h2", {id: "rebuild-h"}, "Rebuild a read model"), this.rebuilds),
      h("section", {"aria-labelledby": "verify-h"}, h("h2", {id: "verify-h"}, "Chain verification per tenant"),
        this.verification),
      h("section", {"aria-labelledby": "health-h"}, h("h2", {id: "health-h"}, "Health: broker, databases, roles"),
        this.health));
    this.refresh();
    this.verifications();
    this.timers.push(setInterval(() => {
      if (!document.hidden) this.refresh();
    }, REFRESH_MS));
    return {};
  }

  unmount() {
    this.timers.forEach(clearInterval);
    this.timers = [];
  }

  async refresh() {
    await Promise.all([this.lag(), this.healthReport()]);
  }

  async lag() {
    try {
      const report = await this.ctx.api.get("/v1/ops/projectors");
      replace(this.lagBody, report.partitions.map((p) => h("tr", {dataset: {projector: p.projector, partition: p.partition}},
        h("td", {}, p.projector), h("td", {class: "num"}, p.partition), h("td", {class: "num"}, p.position),
        h("td", {class: "num"}, p.end_offset), h("td", {class: "num"}, p.lag_events),
        h("td", {class: "num"}, p.lag_seconds.toFixed(1)),
        h("td", {}, h("span", {class: `badge status-${p.status.toLowerCase()}`}, p.status)),
        h("td", {class: "num"}, p.held_tenants))));
      labelled(this.lagTable);
      this.lagStatus.textContent = `Read ${new Date().toLocaleTimeString()}; refreshed every ${REFRESH_MS / 1000} s.`;
      this.showHeld(report.held);
      this.showRebuilds([...new Set(report.partitions.map((p) => p.projector))]);
      mark("console:first-render");
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      this.lagStatus.textContent = `Could not read lag: ${error.message}`;
    }
  }

  showHeld(held) {
    if (!held.length) {
      replace(this.held, h("p", {}, "No tenant is held in any read model."));
      return;
    }
    replace(this.held, h("ul", {class: "held"}, held.map((one) => h("li", {},
      h("strong", {}, `${one.tenant_id} in ${one.projector}`),
      ` (partition ${one.partition}, chain_seq ${one.chain_seq}, since ${when(one.held_at || one.since)}): `,
      one.reason || "", " ",
      h("button", {type: "button", class: "small", onclick: (event) => this.resume(one, event.target)},
        one.resume_requested ? "Resume requested" : `Resume ${one.tenant_id}`)))));
  }

  async resume(one, button) {
    button.disabled = true;
    try {
      await this.ctx.api.post(`/v1/ops/projectors/${encodeURIComponent(one.projector)}/tenants/` +
                              `${encodeURIComponent(one.tenant_id)}/resume`);
      button.textContent = "Resume requested";
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      button.textContent = `Refused: ${error.message}`;
    }
  }

  showRebuilds(projectors) {
    for (const name of projectors) {
      if (this.rebuilding.has(name)) continue;
      const progress = h("progress", {max: 1, value: 0, "aria-label": `Rebuild of ${name}`, hidden: true});
      const state = h("span", {class: "rebuild-state", role: "status"});
      const button = h("button", {type: "button", onclick: () => this.rebuild(name, button, progress, state)},
        `Rebuild ${name}`);
      this.rebuilding.set(name, {progress, state, button});
      this.rebuilds.append(h("div", {class: "rebuild", dataset: {projector: name}}, button, progress, state));
      this.watch(name, false);
    }
  }

  async rebuild(name, button, progress, state) {
    if (!confirmRebuild(name)) return;
    button.disabled = true;
    try {
      await this.ctx.api.post(`/v1/ops/projectors/${encodeURIComponent(name)}/rebuild`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      state.textContent = `Refused (${error.code}): ${error.message}`;
      button.disabled = false;
      return;
    }
    this.watch(name, true);
  }

  // Follow a rebuild's progress until it ends; `started`: one was just started here.
  async watch(name, started) {
    const {progress, state, button} = this.rebuilding.get(name);
    let job;
    try {
      job = await this.ctx.api.get(`/v1/ops/projectors/${encodeURIComponent(name)}/rebuild`);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
      if (started) setTimeout(() => this.watch(name, true), PROGRESS_MS);
      return;
    }
    progress.hidden = false;
    progress.max = Math.max(job.total, 1);
    progress.value = job.state === "done" ? progress.max : job.done;
    state.textContent = job.state === "running"
      ? `running: ${job.done} of ${job.total} events`
      : job.state === "done" ? `done: ${job.applied} events applied into generation ${job.generation} ` +
        `(${when(job.finished_at)})` : `${job.state}: ${job.error || ""}`;
    button.disabled = job.state === "running";
    if (job.state === "running" && this.timers.length) setTimeout(() => this.watch(name, true), PROGRESS_MS);
  }

  async verifications() {
    let job;
    try {
      job = await this.ctx.api.get("/v1/ops/verifications");
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      job = null;
    }
    const start = h("button", {type: "button", onclick: () => this.verify(start)}, "Verify every tenant now");
    if (!job) {
      replace(this.verification, h("p", {}, "No verification has run in this process yet " +
        "(runledger verify-readmodels records each tenant's on its chain)."), start);
      return;
    }
    const rows = job.reports.map((r) => {
      const models = Object.entries(r.models);
      const ok = r.chain_problem === null && models.every(([, m]) => m.ok);
      return h("tr", {dataset: {tenant: r.tenant_id}}, h("td", {}, r.tenant_id), h("td", {class: "num"}, r.chain_size),
        h("td", {}, h("span", {class: `badge ${ok ? "status-ok" : "status-failed"}`}, ok ? "consistent" : "PROBLEM")),
        h("td", {}, r.chain_problem || models.filter(([, m]) => !m.ok).map(([name]) => name).join(", ") || "—"));
    });
    replace(this.verification,
      h("p", {role: "status"}, `${job.state}${job.phase ? " (" + job.phase + ")" : ""}, started ${when(job.started_at)}` +
        `${job.finished_at ? ", finished " + when(job.finished_at) : ""}${job.error ? ": " + job.error : ""}`),
      rows.length ? h("div", {class: "table-scroll"}, h("table", {"aria-label": "Verification per tenant"},
        h("thead", {}, h("tr", {}, ["Tenant", "Chain size", "Verdict", "Problems"].map((c) => h("th", {scope: "col"}, c)))),
        h("tbody", {}, rows))) : null,
      job.state === "running" ? null : start);
    if (job.state === "running" && this.timers.length) setTimeout(() => this.verifications(), PROGRESS_MS);
  }

  async verify(button) {
    button.disabled = true;
    try {
      await this.ctx.api.post("/v1/ops/verifications", {});
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      button.textContent = `Refused: ${error.message}`;
      return;
    }
    this.verifications();
  }

  async healthReport() {
    const report = await this.ctx.api.get("/healthz", {}, {answers: [503]});
    replace(this.health, Object.entries(report || {}).map(([role, value]) => h("div", {dataset: {role}},
      h("dt", {}, role),
      h("dd", {}, typeof value === "string" ? h("span", {class: `badge status-${value}`}, value) : JSON.stringify(value)))));
  }
}

function confirmRebuild(name) {
  return window.confirm(`Rebuild ${name} from offset 0 into fresh tables? The current one keeps serving until the swap.`);
}
