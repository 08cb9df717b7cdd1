"""Receipt tokens, dispatch signatures and API tokens. Standard library only: the worker
SDK (``worker.py``) imports this module inside serverless bundles.

Receipt tokens: an HMAC that binds a receipt to one job and one attempt.

``<attempt>.<seq>.<hex hmac-sha256(secret, "<job id>\n<seq>\n<attempt>")>``, where seq is
the job's enqueue sequence: nothing is stored, a token for attempt 1 cannot answer attempt
2, a token of a purged job cannot answer a later job that reuses its id, and a forged one
fails the constant-time compare.

Dispatch signatures: the coordinator signs each call to a worker with
``X-Redisq-Timestamp: <unix seconds>`` and
``X-Redisq-Signature: v1=<hex hmac-sha256(key, "<timestamp>." + raw body)>``. The first of
``signing_keys`` signs (or ``secret`` when no signing keys are set); a worker accepts a
signature made with any of its keys, within 5 minutes of its own clock either way.

API tokens: with ``api_tokens`` set, ``ApiTokenMiddleware`` asks every request for
``Authorization: Bearer <token>`` except those in ``OPEN_ROUTES`` (health, the
receipt and heartbeat routes, which check their receipt token themselves, and the OpenAPI
document with its /docs page, the console at /ui). The name of the token a request used (``[api_tokens] ops =
"..."``; "" for an unnamed one) is kept in the request's scope under
``TOKEN_NAME_SCOPE_KEY`` (``token_name(scope)``), so the log can say who changed a limit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets as random_secrets
import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .keys import SHARED_SECRET_KEY

if TYPE_CHECKING:  # this module runs in serverless bundles without either
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .connection import RedisClient

TOKEN_HEX_CHARS = 40


class ReceiptGrant(NamedTuple):
    """What a valid receipt token answers."""

    attempt: int
    seq: int


def receipt_token(secret: bytes, job_id: str, attempt: int, seq: int) -> str:
    mac = hmac.digest(secret, f"{job_id}\n{seq}\n{attempt}".encode(), hashlib.sha256).hex()
    return f"{attempt}.{seq}.{mac[:TOKEN_HEX_CHARS]}"


def verify_receipt_token(secret: bytes, job_id: str, token: str) -> ReceiptGrant | None:
    """The attempt (and job sequence) a valid token answers, or None."""
    if not token.isascii():  # compare_digest takes ASCII text only
        return None
    attempt_text, _, rest = token.partition(".")
    seq_text, sep, _ = rest.partition(".")
    if not sep or not attempt_text.isdigit() or not seq_text.isdigit() or len(attempt_text) > 9 or len(seq_text) > 15:
        return None
    attempt, seq = int(attempt_text), int(seq_text)
    if not hmac.compare_digest(receipt_token(secret, job_id, attempt, seq), token):
        return None
    return ReceiptGrant(attempt, seq)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def shared_secret(redis: RedisClient, configured: str | None) -> bytes:
    """The configured secret, else one kept in Redis (created once with SET NX) so that
    every coordinator on that Redis signs and verifies the same tokens."""
    if configured:
        return configured.encode()
    await redis.set(SHARED_SECRET_KEY, random_secrets.token_hex(32), nx=True)
    value = await redis.get(SHARED_SECRET_KEY)
    return value if isinstance(value, bytes) else str(value).encode()


# -- dispatch signatures ---------------------------------------------------------------------

TIMESTAMP_HEADER = "X-Redisq-Timestamp"
SIGNATURE_HEADER = "X-Redisq-Signature"
SIGNATURE_VERSION = "v1"
SIGNATURE_TOLERANCE_S = 300  # a signature older (or further in the future) than this is refused


class SignatureError(Exception):
    """A dispatch request whose signature is missing, malformed, stale or made with another key."""


def dispatch_signature(key: bytes, timestamp_s: int, body: bytes) -> str:
    mac = hmac.new(key, f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def signed_headers(key: bytes, body: bytes, now_s: float | None = None) -> dict[str, str]:
    """The two signature headers for one dispatch body."""
    timestamp_s = int(time.time() if now_s is None else now_s)
    return {TIMESTAMP_HEADER: str(timestamp_s), SIGNATURE_HEADER: dispatch_signature(key, timestamp_s, body)}


def verify_dispatch(keys: Sequence[bytes], timestamp: str | None, signature: str | None, body: bytes,
                    now_s: float | None = None, tolerance_s: float = SIGNATURE_TOLERANCE_S) -> None:
    """Raise ``SignatureError`` (saying why) unless ``signature`` is a valid ``v1=`` signature
    of ``body`` at ``timestamp`` by one of ``keys``, made within ``tolerance_s`` of now.
    The header may carry several comma-separated signatures; one valid one is enough."""
    if not keys:
        raise SignatureError("this worker has no signing keys to verify with")
    if not timestamp or not signature:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header: the request is not "
                             "signed by a redisq coordinator")
    text = timestamp.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise SignatureError(f"{TIMESTAMP_HEADER} must be unix seconds, got {timestamp[:20]!r}")
    age_s = (time.time() if now_s is None else now_s) - int(text)
    if abs(age_s) > tolerance_s:
        when = "old" if age_s > 0 else "in the future"
        raise SignatureError(f"signature timestamp is {abs(age_s):.0f} s {when} (at most {tolerance_s:.0f} s "
                             "allowed): a replay, or a clock out of sync")
    candidates = [part.strip() for part in signature.split(",")]
    for key in keys:
        expected = dispatch_signature(key, int(text), body)
        for candidate in candidates:
            if candidate.isascii() and hmac.compare_digest(expected, candidate):
                return
    raise SignatureError("signature does not match any of this worker's signing keys "
                         "(check that the worker and the coordinator share signing_keys or secret)")


# -- API tokens ----------------------------------------------------------------------------------

# (method, path pattern) of the routes that need no API token.
OPEN_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("GET", re.compile(r"^/health\Z")),
    ("POST", re.compile(r"^/job/[^/]+/receipt\Z")),  # the receipt token is checked by the route
    ("POST", re.compile(r"^/job/[^/]+/heartbeat\Z")),  # likewise
    ("GET", re.compile(r"^/openapi\.json\Z")),  # the API's description, no job data
    ("GET", re.compile(r"^/docs(/assets/.*)?\Z")),  # its page: a browser cannot send a token
    ("GET", re.compile(r"^/\Z")),  # a redirect to the console
    ("GET", re.compile(r"^/ui(/assets/.*)?\Z")),  # the console: no data; its API calls send the token
)


def is_open_route(method: str, path: str) -> bool:
    return any(method == m and pattern.match(path) for m, pattern in OPEN_ROUTES)


def api_token_valid(tokens: Sequence[bytes], token: str | None) -> bool:
    """Constant-time compare against every configured token (no early exit on a match)."""
    return matching_token(tokens, token) is not None


def matching_token(tokens: Sequence[bytes], token: str | None) -> int | None:
    """The index of the configured token ``token`` is, compared in constant time against
    every one (no early exit on a match); None when it is none of them."""
    if token is None or not token.isascii():
        return None
    given = token.encode()
    found = None
    for i, candidate in enumerate(tokens):
        if hmac.compare_digest(candidate, given):
            found = i
    return found


TOKEN_NAME_SCOPE_KEY = "redisq.api_token"


def token_name(scope: Mapping[str, Any]) -> str | None:
    """The name of the API token the request used ("" for an unnamed one); None when the API
    is open (no ``api_tokens``) or the route needs none."""
    name = scope.get(TOKEN_NAME_SCOPE_KEY)
    return name if isinstance(name, str) else None


class ApiTokenMiddleware:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <one of tokens>``
    unless it is one of ``OPEN_ROUTES``. Routes added later are protected without a change
    here. Answers 401 with the API's error body ``{"error": ...}``. ``names`` maps tokens to
    their names; the name of the one used goes in the scope (``token_name``). Routes in
    ``open_routes`` (beside ``OPEN_ROUTES``: GET /metrics with ``metrics_public``) need none."""

    def __init__(self, app: ASGIApp, tokens: Sequence[str], names: Mapping[str, str] | None = None,
                 open_routes: Sequence[tuple[str, re.Pattern[str]]] = ()):
        if not tokens:
            raise ValueError("ApiTokenMiddleware needs at least one token")
        self.app = app
        self.tokens = [t.encode() for t in tokens]
        self.names = [(names or {}).get(t, "") for t in tokens]
        self.open_routes = tuple(open_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open_route(scope["method"], scope["path"]) or any(
                scope["method"] == m and pattern.match(scope["path"]) for m, pattern in self.open_routes):
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        token = bearer_token(authorization)
        index = matching_token(self.tokens, token)
        if index is not None:
            named: MutableMapping[str, Any] = scope
            named[TOKEN_NAME_SCOPE_KEY] = self.names[index]
            await self.app(scope, receive, send)
            return
        message = ("missing API token: send Authorization: Bearer <token> (this coordinator has api_tokens set)"
                   if token is None else "bad API token")
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
