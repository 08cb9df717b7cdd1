"""The seam between the dispatcher and the HTTP client that calls worker URLs.

The client was chosen by measurement (``python -m bench``): aiohttp's keeps thousands of
requests in flight at a flat cost per request, where httpx's pool does work that grows
with the number of waiting requests. ``HttpxTransport`` stays as an alternative
(``http_client = "httpx"``), and ``MockTransport`` lets tests replace the network.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Protocol

MAX_RESPONSE_BYTES = 64 * 1024  # a worker's answer beyond this is not kept as the job's result


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # looked up by lower-case name
    truncated: bool = False


class TransportError(Exception):
    """No response: the connection failed or the timeout passed. The message says which."""


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    def __init__(self, max_connections: int = 1024):
        import aiohttp

        self._aiohttp = aiohttp
        self._session: Any = None
        self._max_connections = max_connections
        self._timeouts: dict[float, Any] = {}  # one ClientTimeout per distinct job timeout

    def _timeout(self, timeout_s: float) -> Any:
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            if len(self._timeouts) > 1000:
                self._timeouts.clear()
            timeout = self._timeouts[timeout_s] = self._aiohttp.ClientTimeout(total=timeout_s)
        return timeout

    def _get_session(self) -> Any:
        if self._session is None:
            aiohttp = self._aiohttp
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        aiohttp = self._aiohttp
        try:
            async with self._get_session().post(url, data=body, headers=headers, timeout=self._timeout(timeout_s),
                                                allow_redirects=False) as resp:
                data = await resp.content.read(MAX_RESPONSE_BYTES + 1)
                return Response(
                    status=resp.status,
                    body=data[:MAX_RESPONSE_BYTES],
                    headers=resp.headers,  # case-insensitive already
                    truncated=len(data) > MAX_RESPONSE_BYTES,
                )
        except asyncio.TimeoutError:
            raise TransportError(f"timed out after {timeout_s:g} s") from None
        except aiohttp.ClientError as e:
            raise TransportError(f"{type(e).__name__}: {e}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxTransport:
    def __init__(self, max_connections: int = 1024):
        import httpx

        self._httpx = httpx
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        httpx = self._httpx
        try:
            resp = await self._client.post(url, content=body, headers=dict(headers), timeout=timeout_s)
        except httpx.TimeoutException:
            raise TransportError(f"timed out after {timeout_s:g} s") from None
        except httpx.HTTPError as e:
            raise TransportError(f"{type(e).__name__}: {e}") from None
        data = resp.content
        return Response(
            status=resp.status_code,
            body=data[:MAX_RESPONSE_BYTES],
            headers={k.lower(): v for k, v in resp.headers.items()},
            truncated=len(data) > MAX_RESPONSE_BYTES,
        )

    async def close(self) -> None:
        await self._client.aclose()


Handler = Callable[[str, bytes, Mapping[str, str]], "Response | Awaitable[Response]"]


class MockTransport:
    """Calls ``handler(url, body, headers)`` instead of the network (sync or async).
    A handler that raises TransportError acts as a connection failure."""

    def __init__(self, handler: Handler):
        self.handler = handler

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> Response:
        result = self.handler(url, body, headers)
        if inspect.isawaitable(result):
            try:
                result = await asyncio.wait_for(result, timeout_s)
            except asyncio.TimeoutError:
                raise TransportError(f"timed out after {timeout_s:g} s") from None
        return result  # type: ignore[return-value]

    async def close(self) -> None:
        return None


def make_transport(name: str, max_connections: int) -> Transport:
    if name == "httpx":
        return HttpxTransport(max_connections)
    if name == "aiohttp":
        return AiohttpTransport(max_connections)
    raise ValueError(f"unknown http client {name!r} (expected 'aiohttp' or 'httpx')")
