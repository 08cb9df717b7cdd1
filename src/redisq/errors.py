"""The errors redisq raises, each with the HTTP status the API answers for it.

    RedisqError                  (500)
    +-- BadRequestError          (400) the body is not JSON
    +-- ValidationError          (422) bad input: names the field (and index, in a batch)
    +-- UnauthorizedError        (401) missing or bad token
    +-- NotFoundError            (404) no such job
    +-- ConflictError            (409) the job's state does not allow it
    +-- PayloadTooLargeError     (413) request body over the limit
    +-- UnavailableError         (503) Redis cannot be reached

The API turns each into ``{"error": message}`` plus ``field``/``index`` where they apply.
"""

from __future__ import annotations

from typing import Any


class RedisqError(Exception):
    status_code = 500

    def __init__(self, message: str, *, field: str | None = None, index: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.index = index

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.index is not None:
            body["index"] = self.index
        return body


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
