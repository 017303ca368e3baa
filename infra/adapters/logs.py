"""Logging for every role: one JSON object per line for machines, plain text for a person at a terminal.

Why it is built like this:

- The trace context is read when the record is formatted, which the handler does synchronously
  in the thread (and under the OpenTelemetry context) that logged it: a processor transaction's
  lines name its batch span, an API request's lines the request span, and a line logged outside
  any span has no `trace_id`. The field names are the OpenTelemetry ones for logs in other
  formats: `trace_id` (32 hex), `span_id` (16 hex), `trace_flags` (2 hex).
- Secrets are scrubbed from the finished line, whatever put them there (a message, an argument,
  an exception's text or traceback): every configured secret value, the password of a database
  URL, and anything shaped like a bearer token or a JWT. Logging is not a hot path; a regular
  expression per line is cheap next to writing it.
- Everything goes through the root logger: uvicorn is started with no logging config of its own
  (infra/entry/bootstrap.py), `warnings` are captured, and an exception that escapes a thread is
  logged rather than printed, so no plain-text line interleaves with the JSON ones.
"""
import json
import logging
import re
import sys
import threading
from datetime import datetime, timezone
from typing import Any, Iterable, TextIO

from opentelemetry import trace

FORMATS = ("json", "text", "auto")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"
# A compact JWS (three base64url parts, the first two JSON objects, so starting "eyJ"), a bearer
# credential, and the password of a URL's userinfo.
PATTERNS = [re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+"),
            re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
            re.compile(r"(?<=://)([^:/@\s]+):([^@/\s]+)@")]
STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class Redactor:
    """Replaces secrets in a finished line: given values verbatim, and tokens and URL passwords by shape."""

    def __init__(self, secrets: Iterable[str] = ()):
        given = {s for s in secrets if s and len(s) >= 6}
        escaped = {json.dumps(s, ensure_ascii=False)[1:-1] for s in given}  # as it appears inside a JSON line
        self.secrets = sorted(given | escaped, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, REDACTED)
        line = PATTERNS[0].sub(REDACTED, line)
        line = PATTERNS[1].sub(lambda m: m.group(1) + REDACTED, line)
        return PATTERNS[2].sub(lambda m: f"{m.group(1)}:{REDACTED}@", line)


def trace_fields() -> dict[str, str]:
    """The current span's ids, as the OpenTelemetry conventions name them for logs; none outside a span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}",
            "trace_flags": f"{context.trace_flags:02x}"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time, level, logger, message, thread, trace ids, extras, exception."""

    def __init__(self, redact: Redactor | None = None):
        super().__init__()
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"), "level": record.levelname, "logger": record.name,
                "message": record.getMessage(), "thread": record.threadName, **trace_fields()}
        line.update({k: v for k, v in vars(record).items() if k not in STANDARD and not k.startswith("_")})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return self.redact(json.dumps(line, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """The classic one-line text, with the trace and span ids appended when a span is current."""

    def __init__(self, redact: Redactor | None = None):
        super().__init__(TEXT)
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = trace_fields()
        if ids:
            first, newline, rest = text.partition("\n")
            text = f"{first} [trace_id={ids['trace_id']} span_id={ids['span_id']}]{newline}{rest}"
        return self.redact(text)


def chosen(setting: str, stream: TextIO) -> str:
    """`json` or `text`: the setting, or for `auto`, text exactly when the stream is a terminal."""
    if setting not in FORMATS:
        raise ValueError(f"log format {setting!r}: use one of {', '.join(FORMATS)}")
    if setting != "auto":
        return setting
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def handler(setting: str = "auto", stream: TextIO | None = None, secrets: Iterable[str] = ()) -> logging.Handler:
    """A handler writing to stream (stderr) in the chosen format, with secrets scrubbed."""
    stream = stream or sys.stderr
    made = logging.StreamHandler(stream)
    redact = Redactor(secrets)
    made.setFormatter(JsonFormatter(redact) if chosen(setting, stream) == "json" else TextFormatter(redact))
    return made


def configure(setting: str = "auto", level: str = "INFO", secrets: Iterable[str] = (),
              stream: TextIO | None = None) -> logging.Handler:
    """Send every logger (and warnings, and exceptions escaping threads) to one handler; return it."""
    installed = handler(setting, stream, secrets)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(installed)
    root.setLevel(level)
    logging.captureWarnings(True)
    threading.excepthook = log_thread_exception
    return installed


def log_thread_exception(args: Any) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("runledger").critical("thread %s stopped on an exception", getattr(args.thread, "name", "?"),
                                            exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
