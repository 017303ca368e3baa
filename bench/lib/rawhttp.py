"""A minimal HTTP/1.1 keep-alive client for load generation, shaped like the httpx calls
`infra.entry.client.LedgerClient` makes (`post(path, json=, headers=)`, `aclose()`).

The load generator runs on the same machine as the server and the broker. httpx costs about
3 ms of CPU per request here (0.6 of 2 cores at 200 requests/s), which the server under test
then does not get; this client does the same requests for a fraction of that. It speaks only
what the command API answers: `Content-Length` bodies, no chunking, no redirects, no TLS.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any


class Response:
    def __init__(self, status_code: int, headers: dict[str, str], body: bytes):
        self.status_code = status_code
        self.headers = headers
        self.content = body

    def json(self) -> Any:
        return json.loads(self.content)


class RawHTTPClient:
    def __init__(self, host: str, port: int, timeout: float = 30.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open: set[asyncio.StreamWriter] = set()

    async def post(self, path: str, json: Any = None, headers: dict[str, str] | None = None,
                   content: bytes | None = None) -> Response:
        """POST `json` (encoded here), or `content` already encoded (as application/json unless headers say)."""
        body = _dumps(json) if content is None else content
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        if not any(k.lower() == "content-type" for k in headers or {}):
            lines.append("Content-Type: application/json")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        return await asyncio.wait_for(self.exchange(request), self.timeout)

    async def exchange(self, request: bytes) -> Response:
        while self.idle:
            reader, writer = self.idle.pop()
            try:
                return await self.roundtrip(reader, writer, request)
            except asyncio.IncompleteReadError as error:
                if error.partial:
                    raise
                # The server closed this idle keep-alive connection before reading the request
                # (uvicorn does after 5 s): nothing was processed, so it goes on a fresh one.
        return await self.roundtrip(*await self.connect(), request)

    async def roundtrip(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        request: bytes) -> Response:
        try:
            writer.write(request)
            response, keep = await read_response(reader)
        except BaseException:
            self.discard(writer)
            raise
        if keep:
            self.idle.append((reader, writer))
        else:
            self.discard(writer)
        return response

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.open.add(writer)
        return reader, writer

    def discard(self, writer: asyncio.StreamWriter) -> None:
        self.open.discard(writer)
        writer.close()

    async def aclose(self) -> None:
        for writer in list(self.open):
            self.discard(writer)
        self.idle.clear()


async def read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
    if "content-length" not in headers:
        raise ValueError(f"response without Content-Length (status {status}); this client reads no other kind")
    body = await reader.readexactly(int(headers["content-length"]))
    return Response(status, headers, body), headers.get("connection", "").lower() != "close"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() if value is not None else b""
