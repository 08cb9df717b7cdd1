"""Shared by the SDK's tests: dispatch bodies as the coordinator builds them, signed; the
recorded platform events (tests/events/) filled in with one; a Flask-like request."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

from redisq.security import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers

EVENTS_DIR = Path(__file__).resolve().parent / "events"


def dispatch_body(worker: str = "send-email", args: Any = None, *, attempt: int = 1, job: str = "job-1",
                  receipt_url: str = "http://127.0.0.1:1/job/{id}/receipt") -> bytes:
    job_id = f"{worker}:{job}"
    return json.dumps({
        "jobId": job_id, "worker": worker, "attempt": attempt, "args": {} if args is None else args,
        "receiptUrl": receipt_url.format(id=job_id), "receiptToken": f"{attempt}.1.token",
    }, separators=(",", ":")).encode()


def signed(body: bytes, key: str = "shared-secret", now_s: float | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", **signed_headers(key.encode(), body, now_s)}


def event(name: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """A recorded event from tests/events/ with this body and these signature headers, in the
    header case the platform uses (v1 keeps the sender's case, v2 lower-cases)."""
    data = copy.deepcopy(json.loads((EVENTS_DIR / name).read_text()))
    lower = data.get("version") == "2.0"
    for header in (TIMESTAMP_HEADER, SIGNATURE_HEADER):
        data["headers"].pop(header, None)
        data["headers"].pop(header.lower(), None)
        data.get("multiValueHeaders", {}).pop(header, None)
        if header in headers:
            data["headers"][header.lower() if lower else header] = headers[header]
            if "multiValueHeaders" in data:
                data["multiValueHeaders"][header] = [headers[header]]
    if data.get("isBase64Encoded"):
        data["body"] = base64.b64encode(body).decode()
    else:
        data["body"] = body.decode()
    return data


class Headers:
    """Case-insensitive, like werkzeug's."""

    def __init__(self, items: dict[str, str]):
        self._items = dict(items)

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self._items.items():
            if key.lower() == name.lower():
                return value
        return default

    def items(self) -> list[tuple[str, str]]:
        return list(self._items.items())


class FlaskLikeRequest:
    """What functions-framework hands a Python HTTP function: a Flask request; the SDK uses
    its method, headers and get_data()."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes):
        self.method, self.path, self.headers, self._body = method, path, Headers(headers), body

    def get_data(self) -> bytes:
        return self._body


def gcf_request(body: bytes, headers: dict[str, str]) -> FlaskLikeRequest:
    data = json.loads((EVENTS_DIR / "gcf_request.json").read_text())
    merged = {k: v for k, v in data["headers"].items() if k not in (TIMESTAMP_HEADER, SIGNATURE_HEADER)}
    merged.update({k: v for k, v in headers.items() if k in (TIMESTAMP_HEADER, SIGNATURE_HEADER)})
    return FlaskLikeRequest(data["method"], data["path"], merged, body)
