"""Receipt tokens: an HMAC that binds a receipt to one job and one attempt.

``<attempt>.<seq>.<hex hmac-sha256(secret, "<job id>\n<seq>\n<attempt>")>``, where seq is
the job's enqueue sequence: nothing is stored, a token for attempt 1 cannot answer attempt
2, a token of a purged job cannot answer a later job that reuses its id, and a forged one
fails the constant-time compare.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as random_secrets
from typing import Any, NamedTuple

from .keys import SHARED_SECRET_KEY

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


async def shared_secret(redis: Any, configured: str | None) -> bytes:
    """The configured secret, else one kept in Redis (created once with SET NX) so that
    every coordinator on that Redis signs and verifies the same tokens."""
    if configured:
        return configured.encode()
    await redis.set(SHARED_SECRET_KEY, random_secrets.token_hex(32), nx=True)
    value = await redis.get(SHARED_SECRET_KEY)
    return value if isinstance(value, bytes) else str(value).encode()
