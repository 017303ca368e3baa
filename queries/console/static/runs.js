// Runs: the tenant's runs, newest first (operator, admin), and one run's timeline (also auditors).
import {ApiError} from "./api.js";
import {ago, h, labelled, mark, micros, replace, short} from "./dom.js";
import {Timeline} from "./timeline.js";

const STATES = ["", "requested", "running", "waiting_for_approval", "succeeded", "failed", "cancelled"];
const RUN_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class RunsView {
  constructor(ctx) {
    this.ctx = ctx;
    this.cursor = null;
  }

  mount(main) {
    const views = this.ctx.me.views;
    this.status = h("p", {class: "status", role: "status"});
    this.body = h("tbody");
    this.more = h("button", {type: "button", hidden: true, onclick: () => this.load(true)}, "Load more");
    const state = h("select", {id: "run-state", onchange: () => {
      this.state = state.value;
      this.load(false);
    }}, STATES.map((s) => h("option", {value: s}, s || "any")));
    const list = views.runs ? [
      h("div", {class: "filters"}, h("label", {for: "run-state"}, "State"), state),
      this.status,
      h("div", {class: "table-scroll"}, this.table = h("table", {class: "runs stack", "aria-label": "Runs, newest first"},
        h("thead", {}, h("tr", {}, ["Run", "State", "Agent", "Project", "Steps", "Tool calls", "Cost", "Requested"]
          .map((c) => h("th", {scope: "col"}, c)))), this.body)),
      this.more] : [h("p", {}, "Listing runs needs the operator or admin role; open one by its id.")];
    replace(main, h("h1", {tabindex: "-1"}, "Runs"), this.openForm(), ...list);
    if (views.runs) this.load(false);
    return {};
  }

  openForm() {
    const input = h("input", {id: "open-run", name: "run", autocomplete: "off", spellcheck: "false",
                              placeholder: "run id (UUID)", pattern: RUN_ID.source.slice(1, -1)});
    const form = h("form", {class: "open-run"}, h("label", {for: "open-run"}, "Open a run"), input,
                   h("button", {type: "submit"}, "Open"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (RUN_ID.test(input.value.trim())) this.ctx.navigate(`#/runs/${input.value.trim().toLowerCase()}`);
    });
    return form;
  }

  unmount() {}

  async load(more) {
    try {
      const page = await this.ctx.api.get("/v1/runs", {limit: 50, state: this.state || null,
                                                       cursor: more ? this.cursor : null});
      if (!more) replace(this.body);
      for (const run of page.items) this.body.append(this.row(run));
      labelled(this.table);
      this.cursor = page.next_cursor;
      this.more.hidden = !this.cursor;
      this.status.textContent = page.items.length || more ? "" : "No runs.";
      mark("console:first-render");
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      this.status.textContent = `Could not list runs: ${error.message}`;
    }
  }

  row(run) {
    return h("tr", {dataset: {runId: run.run_id}},
      h("td", {}, h("a", {href: `#/runs/${run.run_id}`, "aria-label": `Run ${run.run_id}`}, short(run.run_id, 8))),
      h("td", {}, run.state), h("td", {}, run.agent_id), h("td", {}, run.project), h("td", {class: "num"}, run.step_count),
      h("td", {class: "num"}, run.tool_call_count), h("td", {class: "num"}, micros(run.cost_micros)),
      h("td", {}, ago(run.requested_at)));
  }
}

export class RunView {
  constructor(ctx, runId) {
    this.ctx = ctx;
    this.runId = runId;
  }

  mount(main) {
    const box = h("div", {});
    replace(main, h("p", {class: "crumbs"}, h("a", {href: "#/runs"}, "Runs"), " / ", h("code", {}, this.runId)),
            h("h1", {tabindex: "-1"}, `Run ${short(this.runId, 8)}`), box);
    this.timeline = new Timeline(this.ctx, this.runId);
    return this.timeline.mount(box);
  }

  unmount() {
    this.timeline?.unmount();
  }
}
