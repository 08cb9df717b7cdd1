"""A worker endpoint written on a raw socket, so a test chooses how its answer reaches the
dispatcher: in pieces with pauses between them (a JSON body split across TCP segments), cut
short before its Content-Length and closed, or trickling for longer than the timeout.

    async with RawWorker(lambda call: [head(200, 11), b'{"ok":', 0.05, b'true}']) as worker:
        ...  # worker.url; worker.calls holds every dispatch body it read

An answer is a list of pieces: bytes are written (and drained) one write each, a float is a
pause in seconds, ``CLOSE`` ends the connection there (without it, the connection is kept
for the next request, as a keep-alive server does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any

CLOSE = object()  # a piece: close the connection here
Piece = bytes | float | object
Answer = Callable[[dict[str, Any]], Sequence[Piece]]

REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           408: "Request Timeout", 409: "Conflict", 410: "Gone", 422: "Unprocessable Content",
           500: "Internal Server Error", 503: "Service Unavailable"}


def head(status: int, content_length: int, **headers: str) -> bytes:
    """The status line and headers of an answer whose body is ``content_length`` bytes."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", "Content-Type: application/json",
             f"Content-Length: {content_length}", *(f"{name.replace('_', '-')}: {value}"
                                                    for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def whole(status: int, body: bytes = b"", **headers: str) -> list[Piece]:
    """An ordinary answer, in one write."""
    return [head(status, len(body), **headers) + body]


def split(status: int, body: bytes, pause_s: float = 0.05, pieces: int = 2) -> list[Piece]:
    """The headers, then the body in ``pieces`` writes with ``pause_s`` between them."""
    size = -(-len(body) // pieces)
    out: list[Piece] = [head(status, len(body))]
    for start in range(0, len(body), size):
        if start:
            out.append(pause_s)
        out.append(body[start:start + size])
    return out


class RawWorker:
    def __init__(self, answer: Answer):
        self.answer = answer
        self.calls: list[dict[str, Any]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/work"

    def attempts(self, job_id: str) -> list[int]:
        return [c["attempt"] for c in self.calls if c["jobId"] == job_id]

    async def __aenter__(self) -> RawWorker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=2.0)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the dispatcher hung up (it gave up on a late answer), or closed its idle connection
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request, write its answer; False when the connection is to end."""
        header_block = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in header_block.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        call = json.loads(await reader.readexactly(length))
        self.calls.append(call)
        for piece in self.answer(call):
            if piece is CLOSE:
                return False
            if isinstance(piece, bytes):
                writer.write(piece)
                await writer.drain()
            else:
                assert isinstance(piece, float)
                await asyncio.sleep(piece)
        return True
