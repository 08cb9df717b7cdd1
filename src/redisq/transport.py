"""The seam between the dispatcher and the HTTP client that calls worker URLs.

The client was chosen by measurement (``python -m bench``): ``NativeTransport``, redisq's
own HTTP/1.1 client (``http1.py``: asyncio protocols and httptools' parser, doing only what
a worker call needs), spends less than half of pyreqwest's CPU per call and a quarter of
aiohttp's, and end to end cuts the coordinator's CPU per job to about a third. pyreqwest (Rust's reqwest
and hyper, its requests written on the client's own thread) posts about twice as many
requests a second as aiohttp for a third of the CPU (``http_client = "pyreqwest"``; it reads
``HTTP(S)_PROXY``, which the native client does not). ``AiohttpTransport`` is the fallback
(``http_client = "aiohttp"``; the dispatch tests pass on all three), ``HttpxTransport`` an
alternative (``http_client = "httpx"``), and ``MockTransport`` lets tests replace the network.

A call may carry a ``SendWindow``: a throttled job must leave within the coordinator's
``send_window`` of its claim, or not at all (``NotSentError``; its job goes back to its
queue with its tokens), and the dispatcher is told when it is written (a late one holds
its key back). The aiohttp transport looks at the last moment before the request is
written (a trace hook that aiohttp awaits just before the write, after the connection is
set up); the native client looks at the same moment, between taking its connection and its
one write. pyreqwest has no hook there (a body streamed to it is asked for only after the
request's head has been written, so raising there would not leave the worker untouched),
and a look taken any earlier misses the connect: under load a throttled burst on new
connections then reaches the API later than the coordinator thinks, and its key is held
back too little (with such a look, one full test run on a busy machine saw a call past
the Shopify stand-in's bucket; two runs beside a CPU burner did not). So
``PyreqwestTransport`` sends the calls that carry a window (the throttled ones, whose pace
their limits set and where the moment of the write matters more than speed) through aiohttp and
its hook, and every other call through pyreqwest, both under one connection cap. httpx
and the mock look when the call starts.

"Not sent" is only ever said by the window's look: every failure of the client itself
(connection refused included) is a ``TransportError``, an attempt that may have reached
the worker. pyreqwest 0.15.1 names a timeout waiting for the answer ``ConnectTimeoutError``,
so its exception names are not read for that; a timeout is told by ``TimeoutError``.

An answer is read whole, up to ``MAX_RESPONSE_BYTES`` (the rest is not read: ``truncated``);
a body cut short of its Content-Length is a ``TransportError``, as is one that has not
ended when the timeout passes. ``timeout_s`` None: the transport sets no deadline of its
own (the dispatcher's ``AnswerDeadline`` keeps one that follows the lease).
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import aiohttp
    import pyreqwest.client
    import pyreqwest.exceptions
    import pyreqwest.response

MAX_RESPONSE_BYTES = 64 * 1024  # a worker's answer beyond this is not kept as the job's result


async def read_capped(chunks: AsyncIterable[bytes]) -> tuple[bytes, bool]:
    """The body up to ``MAX_RESPONSE_BYTES``, and whether there was more (left unread)."""
    data = b""
    async for chunk in chunks:
        data += chunk
        if len(data) > MAX_RESPONSE_BYTES:
            return data[:MAX_RESPONSE_BYTES], True
    return data, False


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # looked up by lower-case name
    truncated: bool = False


class TransportError(Exception):
    """No response: the connection failed or the timeout passed. The message says which."""


class NotSentError(TransportError):
    """The call's ``SendWindow`` passed before its first byte was written: nothing was sent."""


class SendWindow:
    """A throttled call's deadline for its first byte (``time.monotonic()`` s), and whom to
    tell the moment it is written."""

    __slots__ = ("send_by", "on_written", "written_at")

    def __init__(self, send_by: float, on_written: Callable[[float], None] | None = None):
        self.send_by = send_by
        self.on_written = on_written
        self.written_at: float | None = None

    def check(self) -> float:
        """Now, or NotSentError when the deadline has passed."""
        now = time.monotonic()
        if now > self.send_by:
            raise NotSentError(f"not sent: its send window had passed {(now - self.send_by) * 1000:.0f} ms "
                               "before it could be written")
        return now

    def written(self) -> None:
        """Called just before the first byte is written: checks, then tells (once)."""
        if self.written_at is not None:
            return
        now = self.written_at = self.check()
        if self.on_written is not None:
            self.on_written(now)


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float | None,
                   window: SendWindow | None = None) -> Response: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    # aiohttp (and httpx, below) are imported where they are used, so that this module
    # imports without them.
    def __init__(self, max_connections: int = 1024):
        import aiohttp  # noqa: F401  (fails here, at construction, when it is missing)

        self._session: aiohttp.ClientSession | None = None
        self._paced_session: aiohttp.ClientSession | None = None  # for calls with a SendWindow: it has the trace hook
        self._max_connections = max_connections
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}  # one ClientTimeout per distinct job timeout

    def _timeout(self, timeout_s: float | None) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            if len(self._timeouts) > 1000:
                self._timeouts.clear()
            import aiohttp

            timeout = self._timeouts[timeout_s] = aiohttp.ClientTimeout(total=timeout_s)
        return timeout

    def _new_session(self, trace_configs: list[aiohttp.TraceConfig]) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300)
        return aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",),
                                     trace_configs=trace_configs)

    def _get_session(self, paced: bool) -> aiohttp.ClientSession:
        if not paced:
            if self._session is None:
                self._session = self._new_session([])
            return self._session
        if self._paced_session is None:
            # aiohttp awaits on_request_chunk_sent just before it writes the body (with the
            # headers it holds back until then); raising there sends nothing.
            import aiohttp

            trace = aiohttp.TraceConfig()
            trace.on_request_chunk_sent.append(_before_write)
            self._paced_session = self._new_session([trace])
        return self._paced_session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float | None,
                   window: SendWindow | None = None) -> Response:
        import aiohttp

        if window is not None:
            window.check()  # too late already: no connection is taken
        try:
            async with self._get_session(window is not None).post(
                    url, data=body, headers=headers, timeout=self._timeout(timeout_s), allow_redirects=False,
                    trace_request_ctx=window) as resp:  # None, aiohttp's default, without a window
                # read(n) answers what has come so far: read until the end (or the cap)
                data, truncated = await read_capped(resp.content.iter_chunked(MAX_RESPONSE_BYTES + 1))
                return Response(status=resp.status, body=data, headers=resp.headers,  # case-insensitive already
                                truncated=truncated)
        except TimeoutError:
            raise TransportError(f"timed out after {timeout_s:g} s") from None
        except aiohttp.ClientError as e:
            if isinstance(e.__cause__, NotSentError):
                raise e.__cause__ from None
            raise TransportError(f"{type(e).__name__}: {e}") from None

    async def close(self) -> None:
        for session in (self._session, self._paced_session):
            if session is not None:
                await session.close()
        self._session = self._paced_session = None


async def _before_write(session: aiohttp.ClientSession, context: SimpleNamespace,
                        params: aiohttp.TraceRequestChunkSentParams) -> None:
    window = context.trace_request_ctx
    if isinstance(window, SendWindow):
        window.written()


class PyreqwestTransport:
    """pyreqwest's client (calls with a ``SendWindow``: aiohttp's, for its hook before the
    write): redirects not followed, at most ``max_connections`` calls at once in all."""

    def __init__(self, max_connections: int = 1024):
        import pyreqwest.client  # noqa: F401  (fails here, at construction, when it is missing)

        self._client: pyreqwest.client.Client | None = None
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)  # the cap over both clients
        self._paced = AiohttpTransport(max_connections)

    def _get_client(self) -> pyreqwest.client.Client:
        if self._client is None:
            from pyreqwest.client import ClientBuilder

            from . import __version__

            self._client = (ClientBuilder().follow_redirects(False).max_connections(self._max_connections)
                            .user_agent(f"redisq/{__version__}").build())
        return self._client

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float | None,
                   window: SendWindow | None = None) -> Response:
        from pyreqwest.exceptions import PyreqwestError

        if window is not None:  # looked at when it has its slot, and just before the write
            async with self._slots:
                return await self._paced.post(url, body, headers, timeout_s, window)
        try:
            async with asyncio.timeout(timeout_s), self._slots:
                request = self._get_client().post(url).headers(headers).body_bytes(body).build_streamed()
                async with request as resp:
                    length = resp.headers.get("content-length")
                    if length is not None and length.isdigit() and int(length) <= MAX_RESPONSE_BYTES:
                        data, truncated = bytes(await resp.bytes()), False  # hyper stops at its length
                    else:
                        data, truncated = await read_capped(_chunks(resp))
                    return Response(status=resp.status, body=data, headers=resp.headers,  # case-insensitive
                                    truncated=truncated)
        except TimeoutError:  # pyreqwest's own timeouts are TimeoutErrors too
            raise TransportError(f"timed out after {timeout_s:g} s") from None
        except PyreqwestError as e:
            raise TransportError(_pyreqwest_error_text(e)) from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        self._client = None
        await self._paced.close()


async def _chunks(resp: pyreqwest.response.Response) -> AsyncIterator[bytes]:
    reader = resp.body_reader
    while (chunk := await reader.read_chunk()) is not None:
        yield bytes(chunk)


def _pyreqwest_error_text(e: pyreqwest.exceptions.PyreqwestError) -> str:
    """Its class, its message, and the innermost cause (``connection error: Connection refused``)."""
    causes = (getattr(e, "details", None) or {}).get("causes") or []
    last = causes[-1]["message"] if causes else ""
    return f"{type(e).__name__}: {e.message}" + (f": {last}" if last and last != e.message else "")


class NativeTransport:
    """redisq's own HTTP/1.1 client (``http1.py``): the send window looked at just before the
    write, redirects not followed, at most ``max_connections`` calls at once."""

    def __init__(self, max_connections: int = 1024, ssl_context: ssl.SSLContext | None = None):
        from . import __version__
        from .http1 import Http1Client

        self._client = Http1Client(f"redisq/{__version__}", MAX_RESPONSE_BYTES, ssl_context=ssl_context)
        self._slots = asyncio.Semaphore(max_connections)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float | None,
                   window: SendWindow | None = None) -> Response:
        from .http1 import Http1Error

        if window is not None:
            window.check()  # too late already: no connection is taken
        before_write = None if window is None else window.written
        try:
            async with self._slots:
                if timeout_s is None:
                    answer = await self._client.post(url, body, headers, before_write)
                else:
                    async with asyncio.timeout(timeout_s):
                        answer = await self._client.post(url, body, headers, before_write)
        except TimeoutError:
            raise TransportError(f"timed out after {timeout_s:g} s") from None
        except Http1Error as e:
            raise TransportError(str(e)) from None
        return Response(status=answer.status, body=answer.body, headers=answer.headers, truncated=answer.truncated)

    async def close(self) -> None:
        await self._client.close()


class HttpxTransport:
    def __init__(self, max_connections: int = 1024):
        import httpx

        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float | None,
                   window: SendWindow | None = None) -> Response:
        import httpx

        if window is not None:
            window.written()
        try:
            async with asyncio.timeout(timeout_s):  # httpx's own timeout is per read, not for the whole answer
                async with self._client.stream("POST", url, content=body, headers=dict(headers),
                                               timeout=timeout_s) as resp:
                    data, truncated = await read_capped(resp.aiter_bytes())
        except (httpx.TimeoutException, TimeoutError):
            raise TransportError(f"timed out after {timeout_s:g} s") from None
        except httpx.HTTPError as e:
            raise TransportError(f"{type(e).__name__}: {e}") from None
        return Response(status=resp.status_code, body=data, headers={k.lower(): v for k, v in resp.headers.items()},
                        truncated=truncated)

    async def close(self) -> None:
        await self._client.aclose()


Handler = Callable[[str, bytes, Mapping[str, str]], "Response | Awaitable[Response]"]


class MockTransport:
    """Calls ``handler(url, body, headers)`` instead of the network (sync or async).
    A handler that raises TransportError acts as a connection failure."""

    def __init__(self, handler: Handler):
        self.handler = handler

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float | None,
                   window: SendWindow | None = None) -> Response:
        if window is not None:
            window.written()
        result = self.handler(url, body, headers)
        if inspect.isawaitable(result):
            try:
                result = await asyncio.wait_for(result, timeout_s)
            except TimeoutError:
                raise TransportError(f"timed out after {timeout_s:g} s") from None
        return result

    async def close(self) -> None:
        return None


HTTP_CLIENTS = ("native", "pyreqwest", "aiohttp", "httpx")


def make_transport(name: str, max_connections: int) -> Transport:
    if name == "native":
        return NativeTransport(max_connections)
    if name == "pyreqwest":
        return PyreqwestTransport(max_connections)
    if name == "httpx":
        return HttpxTransport(max_connections)
    if name == "aiohttp":
        return AiohttpTransport(max_connections)
    raise ValueError(f"unknown http client {name!r} (expected one of {', '.join(HTTP_CLIENTS)})")
