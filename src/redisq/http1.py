"""redisq's own HTTP/1.1 client for worker calls: asyncio protocols and httptools' parser.

A worker call is one POST with a small JSON body, answered by a small body, on a
keep-alive connection. That is all this client does, and doing only that it costs a
fraction of a general client's CPU per call (``python -m bench.http_client``, 128 in
flight: 30.7 µs against pyreqwest's 69.3 and aiohttp's 129 on the same machine). Its parts:

* ``Http1Client.post(url, body, headers, before_write)``: a connection to the URL's origin
  (an idle one, most recently used first, or a new one: TCP, and TLS for ``https://`` with
  the system's CA store and the host name checked), ``before_write()`` called just before
  the request's first byte is written (the send window's last look: raising there sends
  nothing, and the connection stays in the pool), then the request written in one write,
  and the answer read by httptools (llhttp, as Node and uvicorn use): a Content-Length
  body, a chunked one, or one that lasts until the connection closes.
* An answer is read up to ``max_body_bytes``; past it the rest is not read (``truncated``)
  and the connection is closed. A body cut short of its length, a connection closed
  before the whole answer, or a malformed answer is an ``Http1Error``: an attempt that may
  have reached the worker (nothing is ever sent twice).
* Redirects are answers like any other (not followed). 1xx answers are skipped.
* A connection goes back to the pool after a whole answer that keeps it alive, and is
  closed after ``idle_s`` unused (or the ``timeout`` of the server's ``Keep-Alive`` header,
  less a margin, when that is shorter), when the server closes it, or when the call is
  cancelled (a timeout) while it is in use.

The caller sets the deadline (``asyncio.timeout`` around ``post``) and the cap on calls at
once; ``redisq.transport.NativeTransport`` is that seam.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.parse
from collections.abc import Callable, Mapping

import httptools

IDLE_S = 15.0  # an idle connection is closed after this (aiohttp's default keep-alive)
KEEP_ALIVE_MARGIN_S = 1.0  # closed this much before the server's own Keep-Alive timeout
SWEEP_EVERY_S = 1.0  # how often idle connections past their time are looked for
MAX_ORIGINS_CACHED = 1000  # parsed URLs kept (the dispatcher calls a few URLs, many times)


class Http1Error(Exception):
    """No whole answer: the connection failed, closed early, or the answer was malformed."""


class Origin:
    """Where a URL's requests go, and the start of each request's head."""

    __slots__ = ("key", "host", "port", "tls", "head_start")

    def __init__(self, url: str, user_agent: str):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Http1Error(f"not an http:// or https:// URL: {url!r}")
        if parts.username is not None or parts.password is not None:
            raise Http1Error("a URL with a user name or password is not supported (send them in a header)")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        default_port = 443 if self.tls else 80
        try:
            self.port = parts.port or default_port
        except ValueError as e:
            raise Http1Error(f"bad port in {url!r}: {e}") from None
        self.key = (parts.scheme, self.host, self.port)
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if self.port == default_port else f"{host}:{self.port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.head_start = f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {user_agent}\r\n"


class Answer:
    __slots__ = ("status", "body", "headers", "truncated")

    def __init__(self, status: int, body: bytes, headers: dict[str, str], truncated: bool):
        self.status = status
        self.body = body
        self.headers = headers  # by lower-case name (a repeated header: its values joined by ", ")
        self.truncated = truncated


class Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request on it at a time."""

    def __init__(self, origin_key: tuple[str, str, int], max_body_bytes: int):
        self.origin_key = origin_key
        self.max_body_bytes = max_body_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = False  # after a whole answer that keeps the connection alive
        self.idle_until = 0.0  # loop time after which an idle connection is closed
        self.keep_alive_s: float | None = None  # the server's Keep-Alive timeout, when it gives one
        self._waiter: asyncio.Future[Answer] | None = None
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._headers: dict[str, str] = {}
        self._header_name = ""
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._headers_done = False
        self._framed = True  # False: the body lasts until the connection closes

    # -- asyncio's side -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is not an asyncio.Transport subclass)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # an idle connection that talks: nothing to say to it any more
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Http1Error("the worker answered with a protocol upgrade"))
        except httptools.HttpParserError as e:
            self._fail(Http1Error(f"malformed answer: {e}"))

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._framed:
            self._answer(truncated=False)  # a body without a length ends with its connection
            return
        what = "its answer's body was whole" if self._headers_done else "any answer came"
        self._fail(Http1Error(f"connection closed before {what}" + (f" ({exc})" if exc else "")))

    # -- httptools' side ------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        known = self._headers.get(key)
        self._headers[key] = text if known is None else f"{known}, {text}"

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        if 100 <= self._status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self._headers_done = True
        headers = self._headers
        self._framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()

    def on_body(self, chunk: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            return
        room = self.max_body_bytes - self._body_bytes
        if len(chunk) > room:  # the cap: keep what fits, answer now, read no further
            if room > 0:
                self._body.append(chunk[:room])
            self._body_bytes = self.max_body_bytes
            self._answer(truncated=True)
            self.close()
            return
        self._body.append(chunk)
        self._body_bytes += len(chunk)

    def on_message_complete(self) -> None:
        if not self._headers_done:  # the end of an interim answer
            self._reset()
            return
        if self._waiter is None or self._waiter.done():
            return
        self.reusable = bool(self.parser.should_keep_alive()) and not self.closed
        if self.reusable:
            self.keep_alive_s = _keep_alive_timeout_s(self._headers.get("keep-alive", ""))
        self._answer(truncated=False)

    # -- the caller's side ----------------------------------------------------------------
    async def request(self, data: bytes) -> Answer:
        assert self.transport is not None
        self._reset()
        self.reusable = False
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        answer: Answer = await waiter
        return answer

    def _answer(self, truncated: bool) -> None:
        assert self._waiter is not None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._waiter.set_result(Answer(self._status, body, self._headers, truncated))

    def _fail(self, error: Http1Error) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()  # nothing of ours is left to flush: a request ended or was given up


def _keep_alive_timeout_s(header: str) -> float | None:
    """``timeout=5, max=100`` -> 5.0; None when it gives none (or a bad one)."""
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "timeout":
            try:
                return max(0.0, float(value.strip()))
            except ValueError:
                return None
    return None


class Http1Client:
    """Keep-alive connections per origin, most recently used first."""

    def __init__(self, user_agent: str, max_body_bytes: int, idle_s: float = IDLE_S,
                 ssl_context: ssl.SSLContext | None = None):
        self.user_agent = user_agent
        self.max_body_bytes = max_body_bytes
        self.idle_s = idle_s
        self._ssl_context = ssl_context
        self._origins: dict[str, Origin] = {}
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._next_sweep = 0.0

    def _origin(self, url: str) -> Origin:
        origin = self._origins.get(url)
        if origin is None:
            if len(self._origins) >= MAX_ORIGINS_CACHED:
                self._origins.clear()
            origin = self._origins[url] = Origin(url, self.user_agent)
        return origin

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    async def post(self, url: str, body: bytes, headers: Mapping[str, str],
                   before_write: Callable[[], object] | None = None) -> Answer:
        origin = self._origin(url)
        loop = asyncio.get_running_loop()
        conn = self._idle_connection(origin.key, loop.time())
        if conn is None:
            conn = await self._connect(origin, loop)
        try:
            if before_write is not None:
                before_write()
        except BaseException:
            self._release(conn, loop.time())  # nothing was written on it
            raise
        head = [origin.head_start, "Content-Length: ", str(len(body)), "\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                conn.close()
                raise Http1Error(f"header {name!r} holds a line break")
            head += (name, ": ", value, "\r\n")
        head.append("\r\n")
        try:
            answer = await conn.request("".join(head).encode("latin-1") + body)
        except BaseException:
            conn.close()  # cancelled (a timeout) or failed: the connection's state is unknown
            raise
        if conn.reusable:
            self._release(conn, loop.time())
        else:
            conn.close()
        return answer

    async def _connect(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> Connection:
        max_body_bytes = self.max_body_bytes
        try:
            if origin.tls:
                _, conn = await loop.create_connection(lambda: Connection(origin.key, max_body_bytes), origin.host,
                                                       origin.port, ssl=self._tls(), server_hostname=origin.host)
            else:
                _, conn = await loop.create_connection(lambda: Connection(origin.key, max_body_bytes), origin.host,
                                                       origin.port)
        except ssl.SSLError as e:
            raise Http1Error(f"TLS with {origin.host}:{origin.port} failed: {e.reason or e}") from None
        except OSError as e:
            reason = (os.strerror(e.errno) if e.errno else str(e) or type(e).__name__).lower()
            raise Http1Error(f"cannot connect to {origin.host}:{origin.port}: {reason}") from None
        return conn

    def _idle_connection(self, key: tuple[str, str, int], now: float) -> Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and now < conn.idle_until:
                return conn
            conn.close()
        return None

    def _release(self, conn: Connection, now: float) -> None:
        if conn.closed:
            return
        idle_s = self.idle_s
        if conn.keep_alive_s is not None:
            idle_s = min(idle_s, conn.keep_alive_s - KEEP_ALIVE_MARGIN_S)
        if idle_s <= 0:
            conn.close()
            return
        conn.idle_until = now + idle_s
        self._idle.setdefault(conn.origin_key, []).append(conn)
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY_S
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Closes the idle connections past their time (or closed by their server)."""
        for key, idle in list(self._idle.items()):
            kept = [conn for conn in idle if not conn.closed and now < conn.idle_until]
            for conn in idle:
                if conn.closed or now >= conn.idle_until:
                    conn.close()
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]

    def idle_connections(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
