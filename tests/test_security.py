"""Receipt tokens bind a receipt to one job (id and enqueue sequence) and one attempt; the shared
secret is one per Redis."""

from __future__ import annotations

import pytest
from stores import sibling_client

from redisq.keys import SHARED_SECRET_KEY
from redisq.security import ReceiptGrant, bearer_token, receipt_token, shared_secret, verify_receipt_token

SECRET = b"a-secret-only-the-coordinators-know"
JOB = "send-email:welcome-1"
SEQ = 41


def test_a_token_verifies_for_its_job_and_gives_its_attempt():
    for attempt in (1, 2, 17):
        token = receipt_token(SECRET, JOB, attempt, SEQ)
        assert verify_receipt_token(SECRET, JOB, token) == ReceiptGrant(attempt, SEQ)


def test_a_token_is_stable_and_differs_per_attempt_and_job():
    assert receipt_token(SECRET, JOB, 1, SEQ) == receipt_token(SECRET, JOB, 1, SEQ)
    assert receipt_token(SECRET, JOB, 1, SEQ) != receipt_token(SECRET, JOB, 2, SEQ)
    assert receipt_token(SECRET, JOB, 1, SEQ) != receipt_token(SECRET, "send-email:welcome-2", 1, SEQ)


def test_a_token_for_another_job_is_refused():
    token = receipt_token(SECRET, JOB, 1, SEQ)
    assert verify_receipt_token(SECRET, "send-email:welcome-2", token) is None
    assert verify_receipt_token(SECRET, "other-worker:welcome-1", token) is None


def test_a_token_relabelled_for_another_attempt_or_job_sequence_is_refused():
    token = receipt_token(SECRET, JOB, 1, SEQ)
    _, seq, mac = token.split(".")
    assert verify_receipt_token(SECRET, JOB, f"2.{seq}.{mac}") is None
    assert verify_receipt_token(SECRET, JOB, f"01.{seq}.{mac}") is None
    assert verify_receipt_token(SECRET, JOB, f"1.{SEQ + 1}.{mac}") is None  # a later job with this id


def test_a_token_signed_with_another_secret_is_refused():
    token = receipt_token(b"someone-elses-secret", JOB, 1, SEQ)
    assert verify_receipt_token(SECRET, JOB, token) is None


def test_a_tampered_token_is_refused():
    token = receipt_token(SECRET, JOB, 1, SEQ)
    last = token[-1]
    flipped = token[:-1] + ("0" if last != "0" else "1")
    assert verify_receipt_token(SECRET, JOB, flipped) is None
    assert verify_receipt_token(SECRET, JOB, token[:-1]) is None  # truncated
    assert verify_receipt_token(SECRET, JOB, token + "0") is None  # extended
    assert verify_receipt_token(SECRET, JOB, token.upper()) is None


@pytest.mark.parametrize("garbage", ["", ".", "1.", ".abc", "x.abc", "-1.abc", "1", "9999999999.1." + "0" * 40, "1.1",
                                     "1.x.abc", "1.1.é" + "0" * 39, "１.abc", "1.é" + "0" * 39])
def test_garbage_tokens_are_refused_without_raising(garbage):
    assert verify_receipt_token(SECRET, JOB, garbage) is None


@pytest.mark.parametrize("header, token", [
    ("Bearer 1.abc", "1.abc"),
    ("bearer 1.abc", "1.abc"),
    ("Bearer   1.abc  ", "1.abc"),
    (None, None),
    ("", None),
    ("Bearer", None),
    ("Bearer   ", None),
    ("Basic dXNlcjpwYXNz", None),
    ("1.abc", None),
])
def test_bearer_token_is_read_from_the_authorization_header(header, token):
    assert bearer_token(header) == token


async def test_the_configured_secret_wins(engine_redis):
    assert await shared_secret(engine_redis, "configured") == b"configured"
    assert await engine_redis.get(SHARED_SECRET_KEY) is None


async def test_coordinators_without_a_secret_share_one_kept_in_redis(engine_redis):
    first = await shared_secret(engine_redis, None)
    other = sibling_client(engine_redis)
    try:
        second = await shared_secret(other, None)
    finally:
        await other.aclose()
    assert first == second and len(first) >= 32
    token = receipt_token(first, JOB, 1, SEQ)
    assert verify_receipt_token(second, JOB, token) == ReceiptGrant(1, SEQ)


# -- dispatch signatures --------------------------------------------------------------------------

from redisq.security import (  # noqa: E402
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    api_token_valid,
    dispatch_signature,
    is_open_route,
    signed_headers,
    verify_dispatch,
)

BODY = b'{"jobId":"send-email:1","worker":"send-email"}'


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body_with_a_version_prefix():
    import hashlib
    import hmac
    expected = hmac.new(b"k", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert dispatch_signature(b"k", 1700000000, BODY) == f"v1={expected}"
    headers = signed_headers(b"k", BODY, now_s=1700000000.7)
    assert headers == {TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: f"v1={expected}"}


def test_a_signature_by_any_of_the_keys_verifies_within_the_tolerance():
    headers = signed_headers(b"old", BODY, now_s=1000)
    verify_dispatch([b"new", b"old"], headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], BODY, now_s=1000 + 300)
    with pytest.raises(SignatureError, match="old"):
        verify_dispatch([b"new", b"old"], headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], BODY, now_s=1000 + 301)
    with pytest.raises(SignatureError, match="does not match"):
        verify_dispatch([b"new"], headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], BODY, now_s=1000)


def test_one_valid_signature_among_several_is_enough():
    headers = signed_headers(b"new", BODY, now_s=1000)
    several = f"v1={'0' * 64}, {headers[SIGNATURE_HEADER]}"
    verify_dispatch([b"new"], headers[TIMESTAMP_HEADER], several, BODY, now_s=1000)


@pytest.mark.parametrize("timestamp, signature, reason", [
    (None, "v1=00", "missing"),
    ("1000", None, "missing"),
    ("-1000", "v1=00", "unix seconds"),
    ("1e3", "v1=00", "unix seconds"),
    ("１０００", "v1=00", "unix seconds"),
    ("1000", "v1=é", "does not match"),
])
def test_malformed_signature_headers_are_refused_with_a_reason(timestamp, signature, reason):
    with pytest.raises(SignatureError, match=reason):
        verify_dispatch([b"k"], timestamp, signature, BODY, now_s=1000)


# -- API tokens ------------------------------------------------------------------------------------


def test_api_tokens_compare_against_every_configured_token():
    tokens = [b"first-token", b"second-token"]
    assert api_token_valid(tokens, "second-token")
    assert not api_token_valid(tokens, "second-toke")
    assert not api_token_valid(tokens, None)
    assert not api_token_valid(tokens, "sécond")


@pytest.mark.parametrize("method, path, open_", [
    ("GET", "/health", True),
    ("POST", "/job/send-email:1/receipt", True),
    ("POST", "/job/send-email:1/heartbeat", True),
    ("POST", "/health", False),
    ("GET", "/job/send-email:1/receipt", False),
    ("POST", "/job", False),
    ("GET", "/job/send-email:1", False),
    ("DELETE", "/job/send-email:1", False),
    ("GET", "/workers", False),
    ("POST", "/job/a/b/receipt", False),
    ("GET", "/health/x", False),
])
def test_only_health_receipts_and_heartbeats_are_open(method, path, open_):
    assert is_open_route(method, path) is open_
