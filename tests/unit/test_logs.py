"""Log lines: one JSON object per line carrying the current span's ids, text at a terminal, secrets scrubbed;
and the bus's line about a command with no outcome names that command's trace."""
import io
import json
import logging
import threading
import warnings

import pytest
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError

from commands.bus import CommandBus, OutcomePending
from infra.adapters import logs
from infra.adapters.eventlog.memory import MemoryLog
from infra.adapters.settings import Settings
from tests.support import KEK, SECRET, command, make_settings, token, unique

TRACER = TracerProvider().get_tracer("test")  # the test's own provider; the global one is never set here


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def record(message: str = "partition %s dropped", *args, level: int = logging.WARNING, exc_info=None,
           name: str = "runledger.processor", **extra) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, message, args or ((3,) if "%s" in message else ()), exc_info)
    made.__dict__.update(extra)
    return made


def test_a_json_line_has_time_level_logger_message_and_thread_and_no_trace_ids_outside_a_span():
    line = json.loads(logs.JsonFormatter().format(record()))
    assert {k: line[k] for k in ("level", "logger", "message", "thread")} == \
        {"level": "WARNING", "logger": "runledger.processor", "message": "partition 3 dropped",
         "thread": threading.current_thread().name}
    assert line["time"].endswith("Z") and len(line["time"]) == len("2026-01-01T00:00:00.000Z")
    assert not {"trace_id", "span_id", "trace_flags"} & set(line)


def test_a_line_logged_under_a_span_carries_its_trace_and_span_ids():
    with TRACER.start_as_current_span("process ledger.commands") as span:
        line = json.loads(logs.JsonFormatter().format(record()))
    context = span.get_span_context()
    assert (line["trace_id"], line["span_id"], line["trace_flags"]) == \
        (f"{context.trace_id:032x}", f"{context.span_id:016x}", f"{context.trace_flags:02x}")
    assert int(line["trace_flags"], 16) & 1  # sampled


def test_an_exception_and_extra_fields_stay_on_the_one_line():
    try:
        raise RuntimeError("chain broken at seq 7")
    except RuntimeError as error:
        text = logs.JsonFormatter().format(record("failed", exc_info=(type(error), error, error.__traceback__),
                                                  partition=4))
    assert "\n" not in text
    line = json.loads(text)
    assert (line["partition"], line["exception"].splitlines()[-1]) == (4, "RuntimeError: chain broken at seq 7")


def test_secrets_are_scrubbed_from_messages_arguments_and_tracebacks_in_both_formats():
    bearer = token("acme", "agent")
    redact = logs.Redactor([SECRET, KEK])
    try:
        raise ValueError(f"could not use {KEK}")
    except ValueError as error:
        failure = (type(error), error, error.__traceback__)
    leaky = record("connecting to %s with %s; Authorization: Bearer %s; jwt %s", "postgresql://app:hunter22@db:5432/x",
                   SECRET, "opaque-credential-1234", bearer, exc_info=failure)
    for formatter in (logs.JsonFormatter(redact), logs.TextFormatter(redact)):
        text = formatter.format(leaky)
        for secret in (SECRET, KEK, "hunter22", "opaque-credential-1234", bearer):
            assert secret not in text, (type(formatter).__name__, secret)
        assert text.count(logs.REDACTED) == 5  # the password, the secret, the bearer, the JWT, the KEK
    assert "postgresql://app:[redacted]@db:5432/x" in logs.JsonFormatter(redact).format(leaky)


def test_auto_is_text_at_a_terminal_and_json_otherwise_and_the_setting_overrides_it():
    with TRACER.start_as_current_span("request") as span:
        at_terminal = logs.handler("auto", Terminal()).format(record())
        piped = logs.handler("auto", io.StringIO()).format(record())
        forced_json = logs.handler("json", Terminal()).format(record())
        forced_text = logs.handler("text", io.StringIO()).format(record())
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert at_terminal.endswith(f"WARNING runledger.processor: partition 3 dropped [trace_id={trace_id} "
                                f"span_id={span.get_span_context().span_id:016x}]")
    assert [json.loads(piped)["trace_id"], json.loads(forced_json)["trace_id"]] == [trace_id, trace_id]
    assert forced_text.split(" ", 2)[2].startswith("WARNING runledger.processor")
    with pytest.raises(ValueError, match="yaml"):
        logs.handler("yaml", io.StringIO())


def test_runledger_log_format_is_a_setting_refused_when_unknown(monkeypatch):
    monkeypatch.setenv("RUNLEDGER_LOG_FORMAT", "json")
    assert Settings(jwt_secret=SECRET).log_format == "json"
    monkeypatch.setenv("RUNLEDGER_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings(jwt_secret=SECRET)


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, threading.excepthook)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    threading.excepthook = saved[2]
    logging.captureWarnings(False)


def test_configure_sends_every_logger_warnings_and_thread_crashes_as_json_lines(root_logging):
    stream = io.StringIO()
    logs.configure("auto", "INFO", [SECRET], stream)
    logging.getLogger("uvicorn.error").warning("listening with secret %s", SECRET)
    warnings.warn("a deprecated call", DeprecationWarning, stacklevel=1)
    crashed = threading.Thread(target=lambda: 1 / 0, name="projectors")
    crashed.start()
    crashed.join()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("uvicorn.error", "WARNING"), ("py.warnings", "WARNING"), ("runledger", "CRITICAL")]
    assert (lines[0]["message"], "a deprecated call" in lines[1]["message"]) == \
        (f"listening with secret {logs.REDACTED}", True)
    assert (lines[2]["message"], lines[2]["exception"].splitlines()[-1]) == \
        ("thread projectors stopped on an exception", "ZeroDivisionError: division by zero")


async def test_the_bus_logs_a_command_without_an_outcome_under_the_trace_the_command_carries(caplog):
    settings = make_settings(command_timeout_s=0.05)
    log = MemoryLog([settings.commands_topic, settings.events_topic, settings.replies_topic], settings.partitions)
    bus = CommandBus(settings, log, tracer=TRACER)  # no processor: no reply will come
    await bus.start()
    sent = command(unique("t"), {"type": "RequestRun", "agent_id": "a"})
    formatter = logs.JsonFormatter()
    lines = []

    class Formatting(logging.Handler):  # formats where the record is made, as the real handler does
        def emit(self, made: logging.LogRecord) -> None:
            lines.append(json.loads(formatter.format(made)))
    handler = Formatting()
    logging.getLogger("runledger.bus").addHandler(handler)
    try:
        with TRACER.start_as_current_span("POST /v1/commands") as request:
            with pytest.raises(OutcomePending):
                await bus.submit(sent)
    finally:
        logging.getLogger("runledger.bus").removeHandler(handler)
        await bus.stop()
    [line] = [line for line in lines if sent["command_id"] in line["message"]]
    context = request.get_span_context()
    assert (line["level"], line["trace_id"], line["span_id"]) == \
        ("WARNING", f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert sent["traceparent"].split("-")[1] == line["trace_id"]  # the trace the command record carries
    assert line["message"] == f"command {sent['command_id']} (RequestRun) had no outcome within 0.05s; " \
                              "it may still be decided"
