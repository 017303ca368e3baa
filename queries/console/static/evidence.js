// Evidence (auditor, admin): the tenant's latest signed checkpoint and its recorded verifications.
import {ApiError} from "./api.js";
import {h, mark, replace, short, when} from "./dom.js";

export class EvidenceView {
  constructor(ctx) {
    this.ctx = ctx;
  }

  mount(main) {
    this.checkpoint = h("div", {});
    this.verifications = h("div", {});
    replace(main, h("h1", {tabindex: "-1"}, `Evidence of ${this.ctx.me.tenant_id}`),
      h("section", {"aria-labelledby": "cp-h"}, h("h2", {id: "cp-h"}, "Latest signed checkpoint"), this.checkpoint),
      h("section", {"aria-labelledby": "ver-h"}, h("h2", {id: "ver-h"}, "Chain verification"), this.verifications));
    this.load();
    return {};
  }

  unmount() {}

  async load() {
    await Promise.all([this.loadCheckpoint(), this.loadVerifications()]);
    mark("console:first-render");
  }

  async loadCheckpoint() {
    try {
      const cp = await this.ctx.api.get("/v1/evidence/checkpoint");
      replace(this.checkpoint, h("dl", {class: "summary-grid"},
        [["Tree size", cp.size], ["Root", h("code", {title: cp.root}, short(cp.root, 16))], ["Origin", cp.origin],
         ["Key", h("code", {}, cp.key.split("+").slice(0, 2).join("+"))], ["On the chain at", cp.chain_seq],
         ["Recorded", when(cp.recorded_at)]].map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(this.checkpoint, h("p", {}, error.status === 404 ? "No signed checkpoint yet." : error.message));
    }
  }

  async loadVerifications() {
    try {
      const page = await this.ctx.api.get("/v1/evidence/verifications", {limit: 20});
      if (!page.items.length) {
        replace(this.verifications, h("p", {}, "No verification is recorded on this tenant's chain yet " +
          "(runledger verify-readmodels records one)."));
        return;
      }
      replace(this.verifications, h("div", {class: "table-scroll"}, h("table", {"aria-label": "Recorded verifications"},
        h("thead", {}, h("tr", {}, ["Recorded", "Chain size", "Verdict", "Models", "By"]
          .map((c) => h("th", {scope: "col"}, c)))),
        h("tbody", {}, page.items.map((v) => h("tr", {},
          h("td", {}, when(v.recorded_at)), h("td", {class: "num"}, v.chain_size),
          h("td", {}, h("span", {class: `badge ${v.ok ? "status-ok" : "status-failed"}`}, v.ok ? "consistent" : "PROBLEM")),
          h("td", {}, Object.entries(v.models).map(([name, m]) => `${name} ${m.ok ? "✓" : "✗"}`).join(" · ")),
          h("td", {}, v.verified_by)))))));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      replace(this.verifications, h("p", {}, error.message));
    }
  }
}
