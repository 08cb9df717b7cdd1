"""redisq: a self-hosted coordinator for background jobs whose workers are HTTP endpoints."""

from .config import Backoff, Config, ConfigError, Retention, WorkerConfig, load_config
from .coordinator import Coordinator
from .errors import (BadRequestError, ConflictError, NotFoundError, PayloadTooLargeError, RedisqError,
                     UnauthorizedError, UnavailableError, ValidationError)
from .model import Job, JobState
from .store import Store

__version__ = "0.1.0"

__all__ = [
    "Backoff", "BadRequestError", "Config", "ConfigError", "ConflictError", "Coordinator", "Job", "JobState",
    "NotFoundError", "PayloadTooLargeError", "RedisqError", "Retention", "Store", "UnauthorizedError",
    "UnavailableError", "ValidationError", "WorkerConfig", "__version__", "load_config",
]
