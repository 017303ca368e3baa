"""A running `runledger serve` logs JSON lines that carry the trace of what they are about.

With no processor running, a command gets no outcome: the API answers 504 and logs a warning under the
request's span. That line's trace id is the one the command's record carries on `<prefix>.commands` (its
`traceparent` header), and its span id is the HTTP request's span, as the OTLP receiver got it.
"""
import json

import httpx
import pytest

from tests.otlp_receiver import HttpReceiver
from tests.support import Service, make_settings, read_topic, token, unique, wait_until


class Unprocessed(Service):
    """API and projectors, no processor; traces to the receiver by the standard variables only."""

    def __init__(self, settings, otlp_endpoint: str):
        super().__init__(settings, processor=False)
        self.otlp_endpoint = otlp_endpoint

    def env(self) -> dict[str, str]:
        return {**{k: v for k, v in super().env().items() if not k.startswith("OTEL_")},
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint, "OTEL_METRICS_EXPORTER": "none",
                "OTEL_BSP_SCHEDULE_DELAY": "100", "RUNLEDGER_LOG_FORMAT": "json"}


@pytest.fixture(scope="module")
async def unprocessed():
    with HttpReceiver() as otlp:
        svc = Unprocessed(make_settings(command_timeout_s=1.0), otlp.endpoint).start()
        try:
            await svc.ready(90, owning=False)
            yield svc, otlp
        finally:
            svc.stop()


def logged(svc) -> list[dict]:
    return [json.loads(line) for line in svc.log_path.read_text().splitlines()]


async def test_the_line_about_a_command_without_an_outcome_carries_its_trace_and_request_span(unprocessed):
    svc, otlp = unprocessed
    tenant = unique("logs-")
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        response = await http.post("/v1/commands", json={"type": "RequestRun", "agent_id": "unanswered"},
                                   headers={"Authorization": f"Bearer {token(tenant)}"})
    assert (response.status_code, response.json()["code"]) == (504, "outcome_pending")
    command_id = response.json()["reason"].split()[1]
    [record] = [r for r in await read_topic(svc.settings, svc.settings.commands_topic)
                if json.loads(r.value)["command_id"] == command_id]
    carried = dict(record.headers)["traceparent"].decode().split("-")

    def line():
        return next((entry for entry in logged(svc) if command_id in entry["message"]), None)
    entry = await wait_until(line, 10, "the bus's warning in the service log")
    assert (entry["level"], entry["logger"], entry["message"]) == \
        ("WARNING", "runledger.bus", f"command {command_id} (RequestRun) had no outcome within 1.0s; "
                                     "it may still be decided")
    assert entry["trace_id"] == carried[1]

    def request_span():
        return next((s for s in otlp.snapshot() if s.kind == "SERVER" and s.trace_id == carried[1]), None)
    server = await wait_until(request_span, 30, "the request's span at the receiver")
    assert (server.name, entry["span_id"]) == ("POST /v1/commands", server.span_id)
    [send] = [s for s in otlp.snapshot() if s.name == f"send {svc.settings.commands_topic}"
              and s.trace_id == carried[1]]
    assert (send.parent_id, send.span_id) == (server.span_id, carried[2])  # the record's context is the send span's
