"""The public surface: ``redisq.__all__``, pinned so that a change to it is a decision."""

from __future__ import annotations

import redisq

PUBLIC = [
    "AsyncClient", "AttemptInfo", "Backoff", "BadRequestError", "Client", "Config", "ConfigError", "ConflictError",
    "Coordinator", "Engine", "Job", "JobContext", "JobInfo", "JobState", "NotFoundError", "OperationFailedError",
    "PayloadTooLargeError", "PermanentFailure", "RedisqError", "Retention", "RetryLater", "ScheduleInfo", "Store",
    "UnauthorizedError", "UnavailableError", "ValidationError", "WaitTimeoutError", "WorkerConfig", "Workers",
    "__version__", "load_config",
]


def test_the_public_surface_is_pinned():
    assert redisq.__all__ == PUBLIC


def test_every_public_name_can_be_imported():
    for name in PUBLIC:
        assert getattr(redisq, name) is not None, name
