"""A plain page that follows a channel with the browser's own EventSource (for people, and the browser test)."""
import json

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from domain.registry import EVENT_CLASSES

router = APIRouter(prefix="/v1/streams", tags=["streams"])

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>runledger stream</title>
<style>body{font:14px system-ui;margin:2em}li{font-family:monospace}.notice{color:#a40}</style></head>
<body><h1>runledger · <span id="channel"></span></h1>
<p>connections opened: <b id="opens">0</b> · state: <b id="state">connecting</b></p>
<ol id="events"></ol>
<script>
const params = new URLSearchParams(location.search);
const channel = params.get("channel") || "tenant";
const query = new URLSearchParams({access_token: params.get("access_token") || ""});
if (params.has("last_event_id")) query.set("last_event_id", params.get("last_event_id"));
document.getElementById("channel").textContent = channel;
const list = document.getElementById("events"), opens = document.getElementById("opens");
const source = new EventSource(`/v1/streams/${channel}?${query}`);
source.onopen = () => { opens.textContent = +opens.textContent + 1; document.getElementById("state").textContent = "open"; };
source.onerror = () => { document.getElementById("state").textContent = source.readyState === 2 ? "closed" : "reconnecting"; };
function show(e) {
  const item = document.createElement("li");
  const data = JSON.parse(e.data);
  item.dataset.id = e.lastEventId;
  item.dataset.type = e.type;
  item.textContent = `#${e.lastEventId} ${e.type} chain_seq ${data.chain_seq} ${data.hash.slice(0, 12)}…`;
  list.appendChild(item);
}
function notice(e) {
  const item = document.createElement("li");
  item.className = "notice";
  item.dataset.notice = e.type;
  item.textContent = `${e.type}: ${e.data}`;
  list.appendChild(item);
}
for (const type of TYPES) source.addEventListener(type, show);
for (const type of ["replay_incomplete", "overflow"]) source.addEventListener(type, notice);
</script></body></html>"""


@router.get("/viewer", response_class=HTMLResponse, summary="A page following a channel with EventSource",
            description="Query: channel (tenant | approvals | runs/<run_id>), access_token, last_event_id.")
async def viewer() -> HTMLResponse:
    return HTMLResponse(PAGE.replace("TYPES", json.dumps(sorted(EVENT_CLASSES))),
                        headers={"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                                            "style-src 'unsafe-inline'",
                                 "Referrer-Policy": "no-referrer"})
