"""The command line: ``redisq serve``, ``demo``, ``schedules``, ``workers`` and ``package``."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .config import MAX_PORT, ConfigError, check_redis_url, load_config
from .server import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as `yes | head -1` ends: the reader stopped before the end


def _event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def serve(args: argparse.Namespace) -> int:
    from .server import serve as serve_until_stopped

    try:
        config = load_config(args.config).with_overrides(
            redis_url=check_redis_url("command line", "--redis-url", args.redis_url), host=args.host, port=args.port)
    except ConfigError as e:
        print(f"redisq: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return serve_until_stopped(config, loop=_event_loop_name())


def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(loop=_event_loop_name())


class ApiCallFailed(Exception):
    """The coordinator could not be reached, or answered an error (already printed)."""


def _call_api(args: argparse.Namespace, method: str, path: str, body: Any = None,
              params: dict[str, str] | None = None) -> Any:
    """One call to a running coordinator's HTTP API (``--url``, ``--token``); its JSON answer."""
    import httpx

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    url = f"{args.url.rstrip('/')}{path}"
    try:
        resp = httpx.request(method, url, json=body, params=params, headers=headers, timeout=10, trust_env=False)
    except httpx.HTTPError as e:
        print(f"redisq: cannot reach {args.url}: {e}", file=sys.stderr)
        raise ApiCallFailed() from e
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = resp.text.strip()
        print(f"redisq: {method} {path} answered {resp.status_code}: {message}", file=sys.stderr)
        raise ApiCallFailed()
    return resp.json()


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _api_command(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ApiCallFailed:
            return EXIT_FAILURE
    return run


@_api_command
def schedules(args: argparse.Namespace) -> int:
    """List the schedules through a running coordinator's HTTP API (``GET /schedules``)."""
    listed = _call_api(args, "GET", "/schedules", params={"worker": args.worker} if args.worker else None)["schedules"]
    if args.json:
        print(json.dumps(listed, indent=2))
        return EXIT_OK
    rows = [("ID", "CRON", "TIMEZONE", "STATE", "NEXT RUN", "LAST FIRE")]
    for s in listed:
        rows.append((s["id"], s["cron"], s["timezone"], "paused" if s["paused"] else "active",
                     s["nextRunAt"] or "-", s["lastFireAt"] or "-"))
    _print_table(rows)
    return EXIT_OK


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _print_workers(listed: list[dict[str, Any]]) -> None:
    rows = [("NAME", "RATE", "BURST", "CONCURRENCY", "TIMEOUT", "STATE", "SCHEDULED", "RUNNING", "RETRYING",
             "DEAD", "TOKENS", "DISPATCHED/S (1 MIN)")]
    for w in listed:
        limits, jobs = w["limits"], w["jobs"]
        state = "paused" if limits["paused"] else ("backing off" if w["backPressureFor"] else "active")
        rows.append((w["name"], _number(limits["rate"]), _number(limits["burst"]), _number(limits["concurrency"]),
                     _number(limits["timeout"]), state, str(jobs["scheduled"]), str(jobs["running"]),
                     str(jobs["retrying"]), str(jobs["dead"]), _number(w["tokens"]), _number(w["dispatchRate"])))
    _print_table(rows)


WORKER_SETTINGS = {"rate": "rate", "burst": "burst", "concurrency": "concurrency", "timeout": "timeout",
                   "total_rate": "totalRate", "total_burst": "totalBurst"}


def _parse_settings(pairs: Sequence[str]) -> dict[str, float | None]:
    """``rate=10 burst=40 concurrency=none`` -> the PATCH body; ValueError names the bad one."""
    body: dict[str, float | None] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in WORKER_SETTINGS:
            raise ValueError(f"{pair!r}: expected NAME=VALUE with NAME one of {', '.join(WORKER_SETTINGS)}")
        if text.lower() in ("none", "null", ""):
            value: float | None = None
        else:
            try:
                value = int(text) if text.lstrip("-").isdigit() else float(text)
            except ValueError:
                raise ValueError(f"{name}: {text!r} is not a number (or none)") from None
            if not math.isfinite(value):
                raise ValueError(f"{name}: {text!r} is not a finite number")
        body[WORKER_SETTINGS[name]] = value
    return body


@_api_command
def workers(args: argparse.Namespace) -> int:
    """``redisq workers`` lists; ``set NAME k=v ...``, ``pause NAME``, ``resume NAME`` change."""
    if args.action == "set":
        try:
            body = _parse_settings(args.settings)
        except ValueError as e:
            print(f"redisq: {e}", file=sys.stderr)
            return EXIT_USAGE
        if not body:
            print("redisq: workers set: give at least one NAME=VALUE, e.g. rate=10", file=sys.stderr)
            return EXIT_USAGE
        listed = [_call_api(args, "PATCH", f"/workers/{args.name}", body)]
    elif args.action in ("pause", "resume"):
        listed = [_call_api(args, "POST", f"/workers/{args.name}/{args.action}")]
    else:
        listed = _call_api(args, "GET", "/workers")["workers"]
    if args.json:
        print(json.dumps(listed if args.action is None else listed[0], indent=2))
    else:
        _print_workers(listed)
    return EXIT_OK


def package(args: argparse.Namespace) -> int:
    from .package import DEPLOY_HINTS, PackageError, build

    try:
        entries = build(args.module, args.target, args.out, requirements=args.requirements, pip_args=args.pip_arg or ())
    except PackageError as e:
        print(f"redisq: package error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"bundle for {args.target} in {args.out}: {', '.join(entries)}")
    print("deploy: " + DEPLOY_HINTS[args.target].format(out=args.out))
    return EXIT_OK


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a port number, 1 to {MAX_PORT}, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code. Output cut short by its reader (``redisq workers |
    head -2``) ends the command quietly with ``EXIT_BROKEN_PIPE``."""
    try:
        try:
            return _run(argv)
        finally:  # what is still buffered is written now, inside the try (argparse's exits too)
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit goes nowhere
        return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="redisq",
                                     description="A coordinator for background jobs whose workers are HTTP endpoints.")
    parser.add_argument("--version", action="version", version=f"redisq {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run the HTTP API and the dispatcher")
    p.add_argument("--config", help="TOML config file (default: $REDISQ_CONFIG)")
    p.add_argument("--redis-url",
                   help="Redis URL (default: $REDISQ_REDIS_URL, else the config's redis_url, else embedded)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, help="port to listen on (default 7575)")
    p.set_defaults(func=serve)

    p = commands.add_parser("demo", help="a self-contained tour on the embedded store")
    p.set_defaults(func=demo)

    def api_options(p: argparse.ArgumentParser, nested: bool = False) -> None:
        # On a nested action the options may come after it too; SUPPRESS keeps a value given before.
        def default(value: object) -> object:
            return argparse.SUPPRESS if nested else value
        p.add_argument("--url", default=default(os.environ.get("REDISQ_URL", "http://127.0.0.1:7575")),
                       help="the coordinator's base URL (default: $REDISQ_URL, else http://127.0.0.1:7575)")
        p.add_argument("--token", default=default(os.environ.get("REDISQ_API_TOKEN") or None),
                       help="an API token, when the coordinator has api_tokens (default: $REDISQ_API_TOKEN)")
        p.add_argument("--json", action="store_true", default=default(False),
                       help="print the API's JSON instead of a table")

    p = commands.add_parser("schedules", help="list the cron schedules (asks a running coordinator)")
    api_options(p)
    p.add_argument("--worker", help="only this worker's schedules")
    p.set_defaults(func=schedules)

    p = commands.add_parser("workers",
                            help="list workers and their live limits, or change them (asks a running coordinator)",
                            description="Without an action: list the workers. `set NAME rate=10 burst=40` changes "
                                        "live limits (rate, burst, concurrency, timeout, total_rate, total_burst; "
                                        "`none` removes one); `pause NAME` and `resume NAME` hold and release "
                                        "dispatch.")
    api_options(p)
    actions = p.add_subparsers(dest="action")
    a = actions.add_parser("set", help="change live limits: redisq workers set NAME rate=10 burst=40")
    api_options(a, nested=True)
    a.add_argument("name")
    a.add_argument("settings", nargs="*", metavar="NAME=VALUE")
    for verb in ("pause", "resume"):
        a = actions.add_parser(verb, help=f"{verb} a worker's dispatch")
        api_options(a, nested=True)
        a.add_argument("name")
    p.set_defaults(func=workers)

    p = commands.add_parser("package", help="build a deployable bundle of a workers module")
    p.add_argument("module", help="the workers module: path/to/workers.py, a package directory or a module name; "
                                  "MODULE:ATTR names the Workers object (default: workers)")
    p.add_argument("--target", required=True, choices=("lambda", "gcf", "vercel"), help="where it will run")
    p.add_argument("--out", required=True, help="directory to write the bundle to (new or empty)")
    p.add_argument("--requirements", help="the module's dependencies (default: requirements.txt beside it)")
    p.add_argument("--pip-arg", action="append",
                   help="an extra argument for pip (lambda), e.g. --pip-arg=--index-url=URL")
    p.set_defaults(func=package)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
