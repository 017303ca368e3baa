"""One SSE subscriber as a plain asyncio Protocol: HTTP/1.1 response head, chunked transfer decoding,
SSE framing (CRLF, LF or CR line ends), and per-event bookkeeping against the expected id sequence.

No httpx: thousands of these live in one client process, which must not become the bottleneck.
"""
from __future__ import annotations

import asyncio
import time

NOTICES = (b"overflow", b"replay_incomplete")


class Chunked:
    """HTTP/1.1 chunked transfer decoding, fed bytes as they arrive."""

    def __init__(self) -> None:
        self.raw = b""          # undecoded bytes
        self.chunk_left = 0     # payload bytes left in the current chunk
        self.crlf_left = 0      # bytes of the CRLF that ends a chunk still to skip
        self.ended = False      # the server ended the body

    def feed(self, data: bytes) -> bytes:
        buf = self.raw + data if self.raw else data
        out, pos, n = [], 0, len(buf)
        while pos < n:
            if self.crlf_left:
                take = min(self.crlf_left, n - pos)
                pos, self.crlf_left = pos + take, self.crlf_left - take
            elif self.chunk_left:
                take = min(self.chunk_left, n - pos)
                out.append(buf[pos:pos + take])
                pos, self.chunk_left = pos + take, self.chunk_left - take
                self.crlf_left = 0 if self.chunk_left else 2
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size, pos = int(buf[pos:eol].split(b";", 1)[0], 16), eol + 2
                if size == 0:
                    self.ended, pos = True, n
                    break
                self.chunk_left = size
        self.raw = buf[pos:]
        return out[0] if len(out) == 1 else b"".join(out)


def parse_frame(frame: bytes) -> tuple[bytes | None, bytes | None, bytes]:
    """(id, data, event) of one SSE frame."""
    ident = data = None
    event = b"message"
    for line in frame.split(b"\n"):
        field, _, value = line.partition(b":")
        value = value[1:] if value[:1] == b" " else value
        if field == b"id":
            ident = value
        elif field == b"data":
            data = value if data is None else data + b"\n" + value
        elif field == b"event":
            event = value
    return ident, data, event


class Sub(asyncio.Protocol):
    def __init__(self, worker, request: bytes, after: int):
        self.w = worker
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.head: bytes | None = b""  # None once the response head is read
        self.body: Chunked | None = Chunked()
        self.text = b""         # SSE text not yet dispatched (line ends normalised to LF)
        self.after = self.last = after
        self.count = self.gaps = self.dups = 0  # gaps: ids skipped; dups: ids at or below the last one
        self.notices: list[str] = []
        self.error: str | None = None
        self.lost = False       # the connection closed before the bench closed it
        self.first_at: float | None = None
        self.done_at: float | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.lost = True
            if exc is not None and self.error is None:
                self.error = repr(exc)
        if not self.ready.done():
            self.ready.set_result(False)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.head is not None:
            data = self.response_head(data)
            if not data:
                return
        body = self.body.feed(data) if self.body else data
        if body:
            self.feed(body, now)

    def response_head(self, data: bytes) -> bytes:
        """Collect the response head; return the body bytes after it (b"" until it is complete)."""
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest, self.head = self.head[:end], self.head[end + 4:], None
        lines = head.split(b"\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            status = -1
        headers = {k.strip().lower(): v.strip().lower() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if b"chunked" not in headers.get(b"transfer-encoding", b""):
            self.body = None
        if status != 200:
            self.error = f"HTTP {status}: {rest[:300]!r}"
            self.ready.set_result(False)
            self.close()
            return b""
        self.ready.set_result(True)
        return rest

    def feed(self, body: bytes, now: float) -> None:
        """SSE framing (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""
        text = self.text + body if self.text else body
        hold = b""
        if text.endswith(b"\r"):       # maybe the first half of a CRLF: decide with the next bytes
            text, hold = text[:-1], b"\r"
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        frames = text.split(b"\n\n")
        self.text = frames.pop() + hold
        for frame in frames:
            if frame:
                self.dispatch(*parse_frame(frame), now)

    def dispatch(self, ident: bytes | None, data: bytes | None, event: bytes, now: float) -> None:
        if ident is None:
            if event in NOTICES:
                self.notices.append(f"{event.decode()} {(data or b'').decode(errors='replace')}")
            return
        seq = int(ident)
        if seq <= self.last:
            self.dups += 1
            return
        self.gaps += seq - self.last - 1
        self.last, self.count = seq, self.count + 1
        self.w.received(seq, data, now)
        self.first_at = self.first_at or now
        if seq >= self.w.target and self.done_at is None:
            self.done_at = now

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()
