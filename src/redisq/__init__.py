"""redisq: a self-hosted coordinator for background jobs whose workers are HTTP endpoints.

Names are imported on first use (PEP 562), so that ``import redisq.worker`` (the worker
SDK, standard library only) works in a serverless bundle without redis, starlette or
aiohttp installed, and ``redisq.Client`` needs httpx only when it is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module (relative to this package) that defines it
_EXPORTS = {
    "Backoff": "config", "Config": "config", "ConfigError": "config", "Retention": "config",
    "WorkerConfig": "config", "load_config": "config",
    "Coordinator": "coordinator",
    "BadRequestError": "errors", "ConflictError": "errors", "NotFoundError": "errors",
    "PayloadTooLargeError": "errors", "RedisqError": "errors", "UnauthorizedError": "errors",
    "UnavailableError": "errors", "ValidationError": "errors",
    "Job": "model", "JobState": "model",
    "Engine": "engine", "Store": "engine",
    "AsyncClient": "client", "AttemptInfo": "client", "Client": "client", "JobInfo": "client",
    "OperationFailedError": "client", "ScheduleInfo": "client", "WaitTimeoutError": "client",
    "JobContext": "worker", "PermanentFailure": "worker", "RetryLater": "worker", "Workers": "worker",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .client import (
        AsyncClient,
        AttemptInfo,
        Client,
        JobInfo,
        OperationFailedError,
        ScheduleInfo,
        WaitTimeoutError,
    )
    from .config import Backoff, Config, ConfigError, Retention, WorkerConfig, load_config
    from .coordinator import Coordinator
    from .engine import Engine, Store
    from .errors import (
        BadRequestError,
        ConflictError,
        NotFoundError,
        PayloadTooLargeError,
        RedisqError,
        UnauthorizedError,
        UnavailableError,
        ValidationError,
    )
    from .model import Job, JobState
    from .worker import JobContext, PermanentFailure, RetryLater, Workers


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'redisq' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
