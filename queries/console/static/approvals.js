// The approval center: the pending queue by required role, oldest first, with each approval's context;
// approve or deny (GrantApproval / DenyApproval) where the caller may; live over the tab's one stream.
import {ApiError, lastSeq, uuid} from "./api.js";
import {ago, debounce, h, mark, replace, short, text, when} from "./dom.js";
import {Timeline} from "./timeline.js";

// Why the caller may not decide an approval, or null if it may: as the domain decides (domain/approval.py).
export function refusal(me, approval) {
  if (!me.roles.includes(approval.required_role)) return `Needs the role ${approval.required_role}.`;
  if (approval.requested_by === me.subject) return "You requested this approval; someone else decides it.";
  if ((approval.approvers || []).includes(me.subject)) return "You have voted; it waits for another approver.";
  return null;
}

export class ApprovalsView {
  constructor(ctx, selected = null) {
    this.ctx = ctx;
    this.selected = selected;
    this.items = new Map(); // approval_id → its latest queue item
    this.cards = new Map(); // approval_id → its card element
    this.groups = new Map(); // required_role → its section
    this.minSeq = 0;
    this.refreshSoon = debounce(() => this.refresh(), 50);
  }

  mount(main) {
    this.summary = h("p", {class: "status", role: "status", "aria-live": "polite"}, "Loading the queue…");
    this.queue = h("div", {class: "queue"});
    this.detail = h("aside", {class: "detail", "aria-label": "Selected approval"});
    replace(main, h("h1", {tabindex: "-1"}, "Approvals"), this.summary,
            h("div", {class: "split"}, this.queue, this.detail));
    this.unsubscribe = this.ctx.stream.on("approvals", (message) => this.onMessage(message));
    return this.showDetail();
  }

  unmount() {
    this.unsubscribe?.();
    this.timeline?.unmount();
  }

  // A new route within this view: only the selection changes.
  update(route) {
    if (route.view !== "approvals") return false;
    this.selected = route.id;
    this.timeline?.unmount();
    const wanted = this.showDetail();
    if (wanted) this.ctx.stream.follow(wanted);
    for (const [id, card] of this.cards) card.classList.toggle("selected", id === this.selected);
    return true;
  }

  onMessage(message) {
    if (message.kind === "subscribed") {
      this.minSeq = Math.max(this.minSeq, message.chainSeq);
      this.refresh();
    } else if (message.kind === "event") {
      this.minSeq = Math.max(this.minSeq, message.envelope.chain_seq);
      this.refreshSoon();
    }
  }

  async refresh() {
    let queue;
    try {
      queue = await this.ctx.api.get("/v1/approvals/pending", {context: true, limit: 500, min_seq: this.minSeq || null,
                                                               wait_ms: 5000});
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      this.summary.textContent = `Could not read the queue: ${error.message}`;
      return;
    }
    this.render(queue.items);
    const count = queue.items.length;
    this.summary.textContent = `${count}${queue.next_cursor ? "+" : ""} pending, oldest first · as of chain_seq ` +
      `${this.minSeq} · ${new Date().toLocaleTimeString()}`;
    mark("console:first-render");
    if (this.selected) this.refreshDetail();
  }

  render(items) {
    const seen = new Set(items.map((item) => item.approval_id));
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.remove();
        this.cards.delete(id);
        this.items.delete(id);
      }
    }
    const byRole = new Map();
    for (const item of items) {
      if (!byRole.has(item.required_role)) byRole.set(item.required_role, []);
      byRole.get(item.required_role).push(item);
    }
    for (const [role, section] of this.groups) {
      if (!byRole.has(role)) {
        section.remove();
        this.groups.delete(role);
      }
    }
    if (!items.length) replace(this.queue, h("p", {class: "empty"}, "No approval is pending."));
    else this.queue.querySelector(".empty")?.remove();
    for (const role of [...byRole.keys()].sort()) this.renderGroup(role, byRole.get(role));
  }

  renderGroup(role, items) {
    let section = this.groups.get(role);
    if (!section) {
      section = h("section", {class: "group", dataset: {role}}, h("h2", {}), h("ol", {class: "cards"}));
      this.groups.set(role, section);
    }
    const sections = [...this.groups.keys()].sort();
    const next = sections.slice(sections.indexOf(role) + 1).map((r) => this.groups.get(r)).find((s) => s.isConnected);
    if (!section.isConnected || section.nextElementSibling !== (next || null)) this.queue.insertBefore(section, next || null);
    section.querySelector("h2").textContent = `Role ${role} · ${items.length} pending`;
    const list = section.querySelector("ol");
    items.forEach((item, i) => {
      const card = this.card(item);
      if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
    });
  }

  card(item) {
    this.items.set(item.approval_id, item);
    let card = this.cards.get(item.approval_id);
    if (!card) {
      card = h("li", {class: "card", dataset: {approvalId: item.approval_id}}, h("div", {class: "info"}),
               h("div", {class: "actions"}));
      this.cards.set(item.approval_id, card);
    }
    card.classList.toggle("selected", item.approval_id === this.selected);
    replace(card.querySelector(".info"), this.info(item));
    this.renderActions(card, item);
    return card;
  }

  info(item) {
    const call = item.tool_call;
    const decision = call ? `${call.decision ?? "undecided"} by ${call.policy_id ?? "no policy"}` +
      `${call.policy_version ? "@" + call.policy_version : ""}` : "no tool call";
    const votes = `${(item.approvers || []).length} of ${item.required_approvals}` +
      `${item.approvers?.length ? ": " + item.approvers.join(", ") : ""}`;
    const run = this.ctx.me.views.timeline
      ? h("a", {href: `#/runs/${item.run_id}`}, short(item.run_id, 8)) : short(item.run_id, 8);
    return [
      h("h3", {}, h("a", {href: `#/approvals/${item.approval_id}`, class: "title"}, text(item.action) || "(no action text)"),
        " ", h("span", {class: `risk risk-${item.risk_tier}`}, item.risk_tier)),
      h("dl", {class: "facts"},
        fact("Run", run), fact("Tool", call ? call.tool : "—"), fact("Policy decision", decision),
        fact("Reason", call ? text(call.decision_reason) : "—"), fact("Votes", votes),
        fact("Requested", `${item.requested_by}, ${ago(item.requested_at)}`), fact("Expires", when(item.expires_at))),
    ];
  }

  renderActions(card, item) {
    const actions = card.querySelector(".actions");
    const why = refusal(this.ctx.me, item);
    const state = why || "may decide";
    if (actions.dataset.state === state) return; // keep an open form, and focus, as the queue refreshes
    actions.dataset.state = state;
    if (why) {
      replace(actions, h("p", {class: "why"}, why));
      return;
    }
    const label = text(item.action) || short(item.approval_id, 8);
    const form = this.decideForm(item);
    const approve = h("button", {type: "button", class: "approve", "aria-label": `Approve “${label}”`,
                                 onclick: () => form.open("grant")}, "Approve");
    const deny = h("button", {type: "button", class: "deny", "aria-label": `Deny “${label}”`,
                              onclick: () => form.open("deny")}, "Deny");
    replace(actions, h("div", {class: "buttons"}, approve, deny), form.element);
  }

  decideForm(item) {
    const id = `reason-${item.approval_id}`;
    const reason = h("textarea", {id, rows: 2, maxlength: 2000});
    const label = h("label", {for: id});
    const submit = h("button", {type: "submit", class: "primary"});
    const cancel = h("button", {type: "button"}, "Cancel");
    const outcome = h("p", {class: "outcome", role: "status"});
    const element = h("form", {class: "decide", hidden: true}, label, reason, h("div", {class: "buttons"}, submit, cancel),
                      outcome);
    let kind = "grant";
    let key = null;
    const open = (what) => {
      kind = what;
      key = uuid(); // one decision, one key: a retry returns its first outcome
      label.textContent = what === "grant" ? "Reason (optional)" : "Reason (required)";
      submit.textContent = what === "grant" ? "Confirm approval" : "Confirm denial";
      reason.required = what === "deny";
      outcome.textContent = "";
      element.hidden = false;
      reason.focus();
    };
    cancel.addEventListener("click", () => {
      element.hidden = true;
      element.closest(".card")?.querySelector(kind === "grant" ? "button.approve" : "button.deny")?.focus();
    });
    element.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      outcome.textContent = "Sending…";
      const body = {type: kind === "grant" ? "GrantApproval" : "DenyApproval", approval_id: item.approval_id};
      if (reason.value.trim()) body.reason = reason.value.trim();
      try {
        const result = await this.ctx.api.command(body, key);
        outcome.textContent = kind === "grant" ? "Approved: recorded on the chain." : "Denied: recorded on the chain.";
        this.minSeq = Math.max(this.minSeq, lastSeq(result));
        this.ctx.stream.seen(lastSeq(result));
        this.refreshSoon();
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        outcome.textContent = `Refused (${error.code}): ${error.message}`;
      } finally {
        submit.disabled = false;
      }
    });
    return {element, open};
  }

  // The selected approval: its votes with their reasons, and its run's timeline where the role may read it.
  // What to follow: the queue, and the run once it is known (null: the detail's first read will say).
  showDetail() {
    this.timeline = null;
    this.pendingTimeline = null;
    if (!this.selected) {
      replace(this.detail, h("p", {class: "hint"}, "Select an approval to see its votes and its run."));
      return {approvals: "keep"};
    }
    this.detailBody = h("div", {});
    const timelineBox = h("div", {class: "embedded-timeline"});
    replace(this.detail, h("h2", {}, `Approval ${short(this.selected, 8)}`), this.detailBody, timelineBox);
    const item = this.items.get(this.selected);
    this.refreshDetail();
    if (!this.ctx.me.views.timeline) return {approvals: "keep"};
    if (item) return {approvals: "keep", ...this.follow(item.run_id, timelineBox)};
    this.pendingTimeline = timelineBox; // one connection, opened once the run is known
    return null;
  }

  follow(runId, box) {
    this.timeline = new Timeline(this.ctx, runId, {compact: true});
    return this.timeline.mount(box);
  }

  async refreshDetail() {
    const id = this.selected;
    let approval;
    try {
      approval = await this.ctx.api.get(`/v1/approvals/${id}`, {context: true, min_seq: this.minSeq || null,
                                                               wait_ms: 5000});
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (id !== this.selected) return;
      replace(this.detailBody, h("p", {}, error.status === 404
        ? "No such approval in this tenant." : `Could not read the approval: ${error.message}`));
      // Follow the queue meanwhile, and keep the run's place: a 404 may only mean that the approvals model has
      // not applied the approval yet (a link opened right after it was requested, a busy server). Each queue
      // refresh reads the detail again, and the first read that finds it opens the run's timeline.
      if (this.pendingTimeline) this.ctx.stream.follow({approvals: "keep"});
      return;
    }
    if (id !== this.selected) return;
    if (this.pendingTimeline) {
      const box = this.pendingTimeline;
      this.pendingTimeline = null;
      this.ctx.stream.follow({approvals: "keep", ...this.follow(approval.run_id, box)});
    }
    const votes = approval.votes.length
      ? h("ul", {class: "votes"}, approval.votes.map((v) =>
        h("li", {}, `${v.approver} · ${when(v.voted_at)}${v.reason ? " · " + text(v.reason) : ""}`)))
      : h("p", {}, "No votes yet.");
    replace(this.detailBody, h("p", {}, h("strong", {}, text(approval.action)), ` · ${approval.state}`),
            h("h3", {}, "Votes"), votes);
  }
}

function fact(name, value) {
  return h("div", {}, h("dt", {}, name), h("dd", {}, value));
}
