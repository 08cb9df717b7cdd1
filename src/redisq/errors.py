"""The errors redisq raises, each with the HTTP status the API answers for it.

    RedisqError                  (500)
    +-- BadRequestError          (400) the body is not JSON
    +-- ValidationError          (422) bad input: names the field (and index, in a batch)
    +-- UnauthorizedError        (401) missing or bad token
    +-- NotFoundError            (404) no such job
    +-- ConflictError            (409) the job's state does not allow it
    +-- PayloadTooLargeError     (413) request body over the limit
    +-- UnavailableError         (503) Redis cannot be reached

The API turns each into ``{"error": message}`` plus ``field``/``index`` where they apply,
and the ``details`` an error carries (a cross-worker batch that failed part way: the ids of
the jobs it wrote, ``{"enqueued": [...]}``).
A message and a field name may echo the caller's input: every error escapes what UTF-8
cannot carry (a lone surrogate such as ``\\ud800`` becomes those six characters), and
``shown`` is how a message quotes a value (its repr, cut short).
"""

from __future__ import annotations

from typing import Any

SHOWN_CHARS = 80  # the most of one value that a message quotes


def escaped(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates) escaped as ``\\udXXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shown(value: Any) -> str:
    """A value of the caller's input as a message quotes it: its repr (which escapes lone
    surrogates and control characters), at most ``SHOWN_CHARS`` characters of it."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS - 3]}... ({len(text)} characters)"


class RedisqError(Exception):
    status_code = 500

    def __init__(self, message: str, *, field: str | None = None, index: int | None = None,
                 details: dict[str, Any] | None = None):
        message = escaped(message)
        super().__init__(message)
        self.message = message
        self.field = None if field is None else escaped(field)
        self.index = index
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.index is not None:
            body["index"] = self.index
        return {**body, **self.details}


class BadRequestError(RedisqError):
    status_code = 400


class ValidationError(RedisqError):
    status_code = 422


class UnauthorizedError(RedisqError):
    status_code = 401


class NotFoundError(RedisqError):
    status_code = 404


class ConflictError(RedisqError):
    status_code = 409


class PayloadTooLargeError(RedisqError):
    status_code = 413


class UnavailableError(RedisqError):
    status_code = 503
