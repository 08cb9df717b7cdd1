"""Settings and per-worker limits, from a TOML file and the environment.

A mistake in the file raises ``ConfigError`` with one line that names the file, the key
and what is wrong: ``redisq.toml: workers.send-email.rate: must be a number > 0``.
Environment variables win over the file: ``REDISQ_REDIS_URL``, ``REDISQ_SECRET``,
``REDISQ_SIGNING_KEYS`` and ``REDISQ_API_TOKENS`` (comma-separated), ``REDISQ_LOG_FORMAT``,
``REDISQ_LOG_LEVEL``, ``REDISQ_ACCESS_LOG``, ``REDISQ_METRICS_PUBLIC`` and ``REDISQ_REDIS_CLUSTER``, and
``REDISQ_CONFIG`` names the file.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .keys import WORKER_NAME_RE
from .transport import HTTP_CLIENTS

# Seconds an attempt may take when neither the job nor its worker says (lua/includes/limits.lua
# keeps the same in ms, for a worker whose live limits are missing; a test holds them equal).
DEFAULT_TIMEOUT_S = 30.0
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Statuses of a worker's answer that fail a job for good: the payload itself can never
# succeed. Every other failure is retried (README, What the worker receives).
DEFAULT_PERMANENT_STATUSES = frozenset({400, 410, 422})


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names where and why."""


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n: ``min(max_s, initial_s * factor ** (n - 1))``, full jitter if set
    (computed by the scripts that end attempts: ``backoff_ms`` in lua/includes/attempts.lua)."""

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 3600.0
    jitter: bool = True


@dataclass(frozen=True)
class Retention:
    """How long finished jobs are kept before they are purged, in seconds."""

    succeeded_s: float = 3600.0
    dead_s: float = 604800.0
    cancelled_s: float = 604800.0


@dataclass(frozen=True)
class LimitConfig:
    """A limit that several workers share (``[limits.shopify]``): the same fields as a
    worker's own, drawn on by the jobs of every worker that names it, per throttle key.
    Its keys, and those of every worker naming it, share the hash tag ``{slot}``."""

    name: str
    rate: float | None = None
    burst: float | None = None
    concurrency: int | None = None
    total_rate: float | None = None
    total_burst: float | None = None
    slot: str = ""  # '' = its own name

    @property
    def slot_tag(self) -> str:
        return self.slot or self.name


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    url: str
    rate: float | None = None  # dispatches per second per throttle key; None = unlimited
    burst: float | None = None  # bucket size; None = max(1, rate)
    concurrency: int | None = None  # jobs in flight at once; None = unlimited
    total_rate: float | None = None  # dispatches per second over all keys; None = unlimited
    total_burst: float | None = None  # the worker-wide bucket's size; None = max(1, total_rate)
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_attempts: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    retention: Retention = field(default_factory=Retention)
    permanent_statuses: frozenset[int] = DEFAULT_PERMANENT_STATUSES  # answers that make the job dead
    on_dead: str | None = None  # POSTed the job when one of this worker's jobs dies (dead_letters.py)
    limits: tuple[str, ...] = ()  # the named limits it obeys ([limits.NAME]), besides its own
    slot: str | None = None  # the hash tag its keys share: its limits' slot; None = its own name
    shared_limits: tuple[LimitConfig, ...] = ()  # the limits it names, as configured

    @property
    def bucket_size(self) -> float | None:
        if self.rate is None:
            return None
        return self.burst if self.burst is not None else max(1.0, self.rate)


@dataclass(frozen=True)
class Config:
    redis_url: str | None = None
    # Whether redis_url is a Redis Cluster: None = ask the node (INFO cluster) at start.
    redis_cluster: bool | None = None
    public_url: str | None = None  # None: http://<host>:<port> of this process (see base_url)
    secret: str | None = None
    host: str = "127.0.0.1"
    port: int = 7575
    max_body_bytes: int = 256 * 1024
    shutdown_grace_s: float = 10.0
    max_in_flight: int = 1024
    claim_batch: int = 256
    http_client: str = "native"
    # The first call of a claim on a full bucket is written at most this long past the
    # bucket's slack, or returned unsent with its tokens (README, Throttling: what is guaranteed).
    send_window_s: float = 0.25
    workers: Mapping[str, WorkerConfig] = field(default_factory=dict)
    limits: Mapping[str, LimitConfig] = field(default_factory=dict)  # [limits.NAME]
    signing_keys: tuple[str, ...] = ()  # the first signs dispatches, all verify; () = sign with secret
    api_tokens: tuple[str, ...] = ()  # () = the API is open
    api_token_names: Mapping[str, str] = field(default_factory=dict)  # token -> its name ([api_tokens] table)
    log_format: str = "text"  # "text" | "json" (logs.py)
    log_level: str = "INFO"
    access_log: bool = False  # uvicorn's line per request
    metrics_public: bool = False  # GET /metrics without an API token
    processes: int = 1  # coordinator processes `serve` runs on its port ("auto" in the file: one per CPU)

    @property
    def worker_slots(self) -> dict[str, str | None]:
        """Each worker's hash tag (``WorkerConfig.slot``): the slot of the limits it names,
        None for its own name."""
        return {name: worker.slot for name, worker in self.workers.items()}

    @property
    def base_url(self) -> str:
        """Where workers reach this coordinator (the receiptUrl's base): ``public_url``, else
        this process's own host and port (127.0.0.1 when it listens on every address)."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def with_overrides(self, *, redis_url: str | None = None, host: str | None = None, port: int | None = None,
                       secret: str | None = None, signing_keys: tuple[str, ...] | None = None,
                       api_tokens: tuple[str, ...] | None = None, processes: int | None = None) -> Config:
        """The settings given outside the file (the command line, the environment) in place
        of the file's; None = not given."""
        return replace(
            self,
            redis_url=self.redis_url if redis_url is None else redis_url,
            host=self.host if host is None else host,
            port=self.port if port is None else port,
            secret=self.secret if secret is None else secret,
            signing_keys=self.signing_keys if signing_keys is None else signing_keys,
            api_tokens=self.api_tokens if api_tokens is None else api_tokens,
            processes=self.processes if processes is None else processes,
        )


def _fail(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {message}")


class _Reader:
    """Reads typed values out of one TOML table, naming the full key in every error."""

    def __init__(self, source: str, table: Mapping[str, Any], path: str, known: set[str]):
        self.source, self.table, self.path = source, table, path
        unknown = sorted(set(table) - known)
        if unknown:
            raise _fail(source, self._key(unknown[0]), f"unknown setting (expected one of {', '.join(sorted(known))})")

    def _key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def number(self, name: str, default: float | None, *, minimum: float = 0.0, strict: bool = True) -> float | None:
        value = self.table.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _fail(self.source, self._key(name), f"must be a number, got {value!r}")
        if (strict and value <= minimum) or (not strict and value < minimum):
            raise _fail(self.source, self._key(name),
                        f"must be a number {'>' if strict else '>='} {minimum:g}, got {value!r}")
        return float(value)

    def integer(self, name: str, default: int | None, *, minimum: int = 1) -> int | None:
        value = self.table.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(self.source, self._key(name), f"must be a whole number, got {value!r}")
        if value < minimum:
            raise _fail(self.source, self._key(name), f"must be at least {minimum}, got {value!r}")
        return value

    def text(self, name: str, default: str | None) -> str | None:
        value = self.table.get(name, default)
        if value is not None and not isinstance(value, str):
            raise _fail(self.source, self._key(name), f"must be a string, got {value!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.table.get(name, default)
        if not isinstance(value, bool):
            raise _fail(self.source, self._key(name), f"must be true or false, got {value!r}")
        return value

    def statuses(self, name: str, default: frozenset[int]) -> frozenset[int]:
        value = self.table.get(name)
        if value is None:
            return default
        if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 400 <= v <= 599 for v in value):
            raise _fail(self.source, self._key(name),
                        f"must be a list of HTTP statuses from 400 to 599 (e.g. [400, 410, 422]), got {value!r}")
        return frozenset(value)

    def table_of(self, name: str) -> Mapping[str, Any]:
        value = self.table.get(name, {})
        if not isinstance(value, Mapping):
            raise _fail(self.source, self._key(name), "must be a table")
        return value


MAX_SEND_WINDOW_S = 60.0
MAX_PORT = 65535
MAX_PROCESSES = 256  # coordinator processes of one `serve`
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def check_redis_url(source: str, key: str, value: str | None) -> str | None:
    if value is not None and not value.startswith(REDIS_URL_SCHEMES):
        raise _fail(source, key, f"must be a redis://, rediss:// or unix:// URL, got {value!r}")
    return value


def check_cluster_url(config: Config, source: str = "config") -> Config:
    """A Redis Cluster is reached over TCP: ``redis_cluster = true`` with a unix:// URL is refused."""
    if config.redis_cluster and (config.redis_url or "").startswith("unix://"):
        raise _fail(source, "redis_url", "a Redis Cluster is reached over TCP (redis_cluster = true): give a node's "
                    "redis:// or rediss:// URL")
    return config


def _url(source: str, key: str, value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise _fail(source, key, f"must be an http:// or https:// URL, got {value!r}")
    return value


def _buckets(source: str, path: str, r: _Reader) -> tuple[float | None, float | None, float | None, float | None]:
    """rate, burst, total_rate, total_burst of a worker's or a shared limit's table."""
    rate = r.number("rate", None)
    burst = r.number("burst", None, minimum=1.0, strict=False)
    if burst is not None and rate is None:
        raise _fail(source, f"{path}.burst", "needs a rate")
    total_rate = r.number("total_rate", None)
    total_burst = r.number("total_burst", None, minimum=1.0, strict=False)
    if total_burst is not None and total_rate is None:
        raise _fail(source, f"{path}.total_burst", "needs a total_rate")
    return rate, burst, total_rate, total_burst


def parse_worker(source: str, name: str, table: Mapping[str, Any]) -> WorkerConfig:
    path = f"workers.{name}"
    if not WORKER_NAME_RE.match(name):
        raise _fail(source, path, "worker names are [a-z0-9][a-z0-9_-]{0,63}")
    if not isinstance(table, Mapping):
        raise _fail(source, path, "must be a table")
    r = _Reader(source, table, path, {"url", "rate", "burst", "concurrency", "total_rate", "total_burst", "timeout",
                                          "max_attempts", "backoff", "retention", "permanent_statuses",
                                          "on_dead", "limits"})
    url = _url(source, f"{path}.url", r.text("url", None))
    if url is None:
        raise _fail(source, f"{path}.url", "is required")
    rate, burst, total_rate, total_burst = _buckets(source, path, r)
    b = _Reader(source, r.table_of("backoff"), f"{path}.backoff", {"initial", "factor", "max", "jitter"})
    backoff = Backoff(
        initial_s=b.number("initial", 1.0, minimum=0.0, strict=False) or 0.0,
        factor=b.number("factor", 2.0, minimum=1.0, strict=False) or 1.0,
        max_s=b.number("max", 3600.0, minimum=0.0, strict=False) or 0.0,
        jitter=b.boolean("jitter", True),
    )
    t = _Reader(source, r.table_of("retention"), f"{path}.retention", {"succeeded", "dead", "cancelled"})
    dead_s = t.number("dead", 604800.0, minimum=0.0, strict=False) or 0.0
    retention = Retention(
        succeeded_s=t.number("succeeded", 3600.0, minimum=0.0, strict=False) or 0.0,
        dead_s=dead_s,
        cancelled_s=t.number("cancelled", dead_s, minimum=0.0, strict=False) or 0.0,
    )
    return WorkerConfig(
        name=name,
        url=url,
        rate=rate,
        burst=burst,
        concurrency=r.integer("concurrency", None),
        total_rate=total_rate,
        total_burst=total_burst,
        timeout_s=r.number("timeout", DEFAULT_TIMEOUT_S) or DEFAULT_TIMEOUT_S,
        max_attempts=r.integer("max_attempts", 5) or 5,
        backoff=backoff,
        retention=retention,
        permanent_statuses=r.statuses("permanent_statuses", DEFAULT_PERMANENT_STATUSES),
        on_dead=_url(source, f"{path}.on_dead", r.text("on_dead", None)),
        limits=_names(source, f"{path}.limits", table.get("limits")),
    )


def _names(source: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, key, f'must be a list of limit names (e.g. ["shopify"]), got {value!r}')
    if len(set(value)) != len(value):
        raise _fail(source, key, f"names a limit twice: {value!r}")
    return tuple(value)


def parse_limit(source: str, name: str, table: Mapping[str, Any]) -> LimitConfig:
    path = f"limits.{name}"
    if not WORKER_NAME_RE.match(name):
        raise _fail(source, path, "limit names are [a-z0-9][a-z0-9_-]{0,63}")
    if not isinstance(table, Mapping):
        raise _fail(source, path, "must be a table")
    r = _Reader(source, table, path, {"rate", "burst", "concurrency", "total_rate", "total_burst", "slot"})
    rate, burst, total_rate, total_burst = _buckets(source, path, r)
    concurrency = r.integer("concurrency", None)
    if rate is None and total_rate is None and concurrency is None:
        raise _fail(source, path, "limits nothing: give it a rate, a total_rate or a concurrency")
    slot = r.text("slot", None) or ""
    if slot and not WORKER_NAME_RE.match(slot):
        raise _fail(source, f"{path}.slot", "slot names are [a-z0-9][a-z0-9_-]{0,63}")
    return LimitConfig(name=name, rate=rate, burst=burst, concurrency=concurrency, total_rate=total_rate,
                       total_burst=total_burst, slot=slot)


def place_workers(source: str, workers: Mapping[str, WorkerConfig],
                  limits: Mapping[str, LimitConfig]) -> dict[str, WorkerConfig]:
    """Each worker in the hash slot of the limits it names. One claim script checks and takes
    all of a job's limits at once, so a worker's limits must share one slot: a worker naming
    limits of two slots cannot be claimed atomically (on Redis Cluster, its keys could not
    sit beside both), and is refused."""
    placed = {}
    for name, worker in workers.items():
        slots: dict[str, str] = {}
        for limit in worker.limits:
            if limit not in limits:
                defined = ", ".join(sorted(limits)) or "none"
                raise _fail(source, f"workers.{name}.limits",
                            f"unknown limit {limit!r} (defined in [limits.NAME]: {defined})")
            slots.setdefault(limits[limit].slot_tag, limit)
        if len(slots) > 1:
            (first_slot, first), (second_slot, second) = list(slots.items())[:2]
            raise _fail(source, f"workers.{name}.limits",
                        f"{first!r} and {second!r} live in different hash slots ({{{first_slot}}} and "
                        f"{{{second_slot}}}), so no one script can take both atomically; put them in one "
                        f'(slot = "{first_slot}" under [limits.{second}])')
        placed[name] = replace(worker, slot=next(iter(slots), None),
                               shared_limits=tuple(limits[limit] for limit in worker.limits))
    return placed


TOP_LEVEL_KEYS = {
    "redis_url", "redis_cluster", "public_url", "secret", "host", "port", "max_body_bytes",
    "shutdown_grace", "max_in_flight", "claim_batch", "http_client", "send_window", "workers", "limits",
    "signing_keys", "api_tokens", "log_format", "log_level", "access_log", "metrics_public",
    "processes",
}


def parse_text_list(source: str, key: str, value: Any) -> tuple[str, ...]:
    """A list of non-empty strings (signing keys, API tokens)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(source, key, "must be a list of non-empty strings")
    return tuple(v.strip() for v in value)


def parse_api_tokens(source: str, value: Any) -> tuple[tuple[str, ...], dict[str, str]]:
    """``api_tokens``: a list of tokens, or a table of named ones (``[api_tokens] ops = "..."``);
    returns the tokens and, for a table, each token's name."""
    if not isinstance(value, Mapping):
        try:
            return parse_text_list(source, "api_tokens", value), {}
        except ConfigError:
            raise _fail(source, "api_tokens", 'must be a list of tokens (["..."]) or a table of named ones '
                                              '([api_tokens] ops = "...")') from None
    names: dict[str, str] = {}
    for name, token in value.items():
        if not isinstance(token, str) or not token.strip():
            raise _fail(source, f"api_tokens.{name}", "must be a non-empty string (the token)")
        if token.strip() in names:
            raise _fail(source, f"api_tokens.{name}", f"is the same token as api_tokens.{names[token.strip()]}")
        names[token.strip()] = name
    return tuple(names), names


def processes_of(source: str, key: str, value: Any) -> int:
    """A count of processes, or "auto": one per CPU of this machine."""
    if value == "auto":
        return os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROCESSES:
        raise _fail(source, key, f"must be a whole number from 1 to {MAX_PROCESSES} or \"auto\", got {value!r}")
    return value


def log_format_of(source: str, key: str, value: Any) -> str:
    if value not in LOG_FORMATS:
        raise _fail(source, key, f"must be 'text' or 'json', got {value!r}")
    return str(value)


def log_level_of(source: str, key: str, value: Any) -> str:
    level = value.upper() if isinstance(value, str) else value
    if level not in LOG_LEVELS:
        raise _fail(source, key, f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return str(level)


ENV_TRUE, ENV_FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(env: Mapping[str, str], name: str) -> bool | None:
    """A true/false environment variable; None when unset or empty."""
    value = env.get(name, "").strip().lower()
    if not value:
        return None
    if value not in ENV_TRUE + ENV_FALSE:
        raise _fail("environment", name, f"must be true or false (or 1/0, yes/no, on/off), got {env[name]!r}")
    return value in ENV_TRUE


def env_text_list(env: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    """A comma-separated environment variable as a list; None when unset or empty."""
    items = tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())
    return items or None


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> Config:
    r = _Reader(source, data, "", TOP_LEVEL_KEYS)
    http_client = r.text("http_client", "native") or "native"
    if http_client not in HTTP_CLIENTS:
        raise _fail(source, "http_client", f"must be {' or '.join(repr(c) for c in HTTP_CLIENTS)}, got {http_client!r}")
    limits = {name: parse_limit(source, name, table) for name, table in r.table_of("limits").items()}
    workers = place_workers(source, {name: parse_worker(source, name, table)
                                     for name, table in r.table_of("workers").items()}, limits)
    send_window_s = r.number("send_window", 0.25) or 0.25
    if send_window_s > MAX_SEND_WINDOW_S:
        raise _fail(source, "send_window", f"must be at most {MAX_SEND_WINDOW_S:g} seconds, got {send_window_s!r}")
    port = r.integer("port", 7575) or 7575
    api_tokens, api_token_names = parse_api_tokens(source, data.get("api_tokens"))
    if port > MAX_PORT:
        raise _fail(source, "port", f"must be a port number, 1 to {MAX_PORT}, got {port!r}")
    return Config(
        redis_url=check_redis_url(source, "redis_url", r.text("redis_url", None)),
        redis_cluster=None if data.get("redis_cluster") is None else r.boolean("redis_cluster", False),
        public_url=(_url(source, "public_url", r.text("public_url", None)) or "").rstrip("/") or None,
        secret=r.text("secret", None),
        host=r.text("host", "127.0.0.1") or "127.0.0.1",
        port=port,
        max_body_bytes=r.integer("max_body_bytes", 256 * 1024) or 256 * 1024,
        shutdown_grace_s=r.number("shutdown_grace", 10.0, minimum=0.0, strict=False) or 0.0,
        max_in_flight=r.integer("max_in_flight", 1024) or 1024,
        claim_batch=r.integer("claim_batch", 256) or 256,
        http_client=http_client,
        send_window_s=send_window_s,
        workers=workers,
        limits=limits,
        signing_keys=parse_text_list(source, "signing_keys", data.get("signing_keys")),
        api_tokens=api_tokens,
        api_token_names=api_token_names,
        log_format=log_format_of(source, "log_format", data.get("log_format", "text")),
        log_level=log_level_of(source, "log_level", data.get("log_level", "INFO")),
        access_log=r.boolean("access_log", False),
        metrics_public=r.boolean("metrics_public", False),
        processes=processes_of(source, "processes", data.get("processes", 1)),
    )


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The file at ``path`` (or ``$REDISQ_CONFIG``), then the environment on top."""
    env = os.environ if environ is None else environ
    path = path or env.get("REDISQ_CONFIG")
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        config = parse_config(data, path)
    else:
        config = Config()
    redis_url = check_redis_url("environment", "REDISQ_REDIS_URL", env.get("REDISQ_REDIS_URL") or None)
    config = config.with_overrides(signing_keys=env_text_list(env, "REDISQ_SIGNING_KEYS"),
                                   api_tokens=env_text_list(env, "REDISQ_API_TOKENS"))
    if env.get("REDISQ_API_TOKENS", "").strip():  # the environment's tokens are unnamed
        config = replace(config, api_token_names={})
    log_format, log_level = env.get("REDISQ_LOG_FORMAT", "").strip(), env.get("REDISQ_LOG_LEVEL", "").strip()
    access_log, metrics_public = env_flag(env, "REDISQ_ACCESS_LOG"), env_flag(env, "REDISQ_METRICS_PUBLIC")
    redis_cluster = env_flag(env, "REDISQ_REDIS_CLUSTER")
    config = replace(
        config,
        log_format=log_format_of("environment", "REDISQ_LOG_FORMAT", log_format.lower()) if log_format
        else config.log_format,
        log_level=log_level_of("environment", "REDISQ_LOG_LEVEL", log_level) if log_level else config.log_level,
        access_log=config.access_log if access_log is None else access_log,
        metrics_public=config.metrics_public if metrics_public is None else metrics_public,
        redis_cluster=config.redis_cluster if redis_cluster is None else redis_cluster,
    )
    return check_cluster_url(config.with_overrides(redis_url=redis_url, secret=env.get("REDISQ_SECRET") or None),
                             path or "environment")
