// The console: sign-in, the caller's views, the router and the tab's one stream.
import {Api, ApiError} from "./api.js";
import {ApprovalsView} from "./approvals.js";
import {h, replace} from "./dom.js";
import {EvidenceView} from "./evidence.js";
import {OpsView} from "./ops.js";
import {RunView, RunsView} from "./runs.js";
import {Multiplex} from "./stream.js";

const TOKEN = "runledger.console.token"; // sessionStorage: this tab only, gone when it closes
const NAV = [["approvals", "Approvals", (v) => v.approvals], ["runs", "Runs", (v) => v.runs || v.timeline],
             ["evidence", "Evidence", (v) => v.evidence], ["ops", "Ops", (v) => v.ops]];
const STATES = {off: "no stream open", connecting: "connecting…", live: "live", reconnecting: "reconnecting…"};

const root = document.getElementById("app");
let ctx = null;
let current = null;

function route() {
  const [view, id] = location.hash.replace(/^#\/?/, "").split("/");
  return {view: view || "", id: id || null};
}

function allowed(me, view) {
  const entry = NAV.find(([name]) => name === view);
  return entry ? entry[2](me.views) : false;
}

function viewFor(r) {
  if (r.view === "approvals") return new ApprovalsView(ctx, r.id);
  if (r.view === "runs") return r.id ? new RunView(ctx, r.id) : new RunsView(ctx);
  if (r.view === "evidence") return new EvidenceView(ctx);
  if (r.view === "ops") return new OpsView(ctx);
  return null;
}

function show() {
  if (!ctx) return;
  const r = route();
  if (!allowed(ctx.me, r.view)) {
    const first = NAV.find(([, , open]) => open(ctx.me.views));
    if (first && r.view !== first[0]) {
      location.replace(`#/${first[0]}`);
      return;
    }
    if (!first) {
      replace(ctx.main, h("h1", {tabindex: "-1"}, "Nothing to show"),
              h("p", {}, `The roles ${ctx.me.roles.join(", ")} open no view of this console.`));
      return;
    }
  }
  for (const link of ctx.nav.querySelectorAll("a")) {
    if (link.dataset.view === r.view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (current?.update?.(r)) return;
  current?.unmount();
  current = viewFor(r);
  const wanted = current.mount(ctx.main); // what the view follows on the tab's one stream (null: it will say)
  if (wanted) ctx.stream.follow(wanted);
  ctx.main.querySelector("h1")?.focus();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN);
  ctx?.stream.close();
  current?.unmount();
  ctx = null;
  current = null;
  signInPage(message);
}

function signInPage(message) {
  const token = h("textarea", {id: "token", name: "token", rows: 4, required: true, autocomplete: "off",
                               spellcheck: "false", "aria-describedby": "token-help"});
  const error = h("p", {class: "error", role: "alert"}, message);
  const form = h("form", {class: "signin", method: "post"},
    h("label", {for: "token"}, "Bearer token"), token,
    h("p", {id: "token-help", class: "hint"}, "Paste a runledger token (runledger token --tenant T --subject S " +
      "--roles r1,r2). It stays in this tab only (session storage) and is sent in the Authorization header, never in a URL."),
    h("button", {type: "submit", class: "primary"}, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const pasted = token.value.trim().replace(/^Bearer\s+/i, "");
    if (!(await start(pasted, (text) => { error.textContent = text; }))) token.focus();
  });
  replace(root, h("main", {id: "main", class: "signin-page"},
    h("h1", {tabindex: "-1"}, "runledger console"), h("p", {}, "Sign in with a bearer token."), form));
  token.focus();
}

async function start(token, fail) {
  const api = new Api(token, (refusal) => {
    if (ctx?.api === api) signOut(`Signed out: ${refusal?.message || "the token was refused"}`);
  });
  let me;
  try {
    me = await api.get("/v1/console/session");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    fail(`Not signed in: ${error.message}`);
    return false;
  }
  sessionStorage.setItem(TOKEN, token);
  layout(api, me);
  signOutAtExpiry(token);
  show();
  return true;
}

// The API refuses an expired token anyway; this says so at once, instead of at the next request.
function signOutAtExpiry(token) {
  let expires;
  try {
    expires = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp * 1000;
  } catch {
    return;
  }
  const api = ctx.api;
  const left = expires - Date.now();
  if (Number.isFinite(left) && left < 2 ** 31) {
    setTimeout(() => { if (ctx?.api === api) signOut("Signed out: the token has expired."); }, Math.max(left, 0));
  }
}

function layout(api, me) {
  const state = h("span", {class: "stream-state", role: "status", "aria-live": "polite"}, STATES.off);
  const nav = h("nav", {"aria-label": "Console"}, h("ul", {}, NAV.filter(([, , open]) => open(me.views))
    .map(([view, label]) => h("li", {}, h("a", {href: `#/${view}`, dataset: {view}}, label)))));
  const main = h("main", {id: "main"});
  replace(root,
    h("a", {href: "#main", class: "skip", onclick: (event) => {
      event.preventDefault();
      main.querySelector("h1")?.focus();
    }}, "Skip to content"),
    h("header", {class: "top"},
      h("p", {class: "brand"}, "runledger"),
      nav,
      h("p", {class: "who"}, h("span", {class: "tenant", title: "tenant"}, me.tenant_id), " · ",
        h("span", {class: "subject"}, me.subject), " · ", h("span", {class: "roles"}, me.roles.join(", ")), " · ", state,
        " ", h("button", {type: "button", class: "small", onclick: () => signOut("Signed out.")}, "Sign out"))),
    main);
  const stream = new Multiplex(api, (s) => {
    state.textContent = STATES[s] || s;
    state.dataset.state = s;
  });
  ctx = {api, me, stream, main, nav, navigate: (hash) => { location.hash = hash; }};
}

window.addEventListener("hashchange", show);
const saved = sessionStorage.getItem(TOKEN);
if (saved) start(saved, (text) => signInPage(text));
else signInPage("");
