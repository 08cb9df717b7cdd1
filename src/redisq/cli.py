"""The command line: ``redisq serve``, ``redisq demo`` and ``redisq package``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from typing import Iterator, Sequence

from . import __version__
from .config import ConfigError, check_redis_url, load_config

log = logging.getLogger("redisq")


def _event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _server_class() -> type:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn's server, except that after a graceful shutdown on SIGTERM/SIGINT the
        process exits 0 instead of raising the captured signal again."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_app
    from .coordinator import Coordinator

    try:
        config = load_config(args.config).with_overrides(
            redis_url=check_redis_url("command line", "--redis-url", args.redis_url), host=args.host, port=args.port)
    except ConfigError as e:
        print(f"redisq: config error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not config.workers:
        log.warning("no workers configured: jobs can only be enqueued for workers named under [workers.NAME]")
    coordinator = Coordinator(config)
    app = create_app(coordinator)
    log.info("redisq %s serving on http://%s:%d (%s store, %d workers)", __version__, config.host, config.port,
             "embedded" if coordinator.embedded else "redis", len(config.workers))
    server = _server_class()(uvicorn.Config(
        app, host=config.host, port=config.port, loop=_event_loop_name(), lifespan="on",
        log_level="warning", timeout_graceful_shutdown=max(1, int(config.shutdown_grace_s) + 1)))
    server.run()
    if not server.started:
        log.error("redisq could not start (see the errors above)")
        return 1
    return 0


def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(loop=_event_loop_name())


def package(args: argparse.Namespace) -> int:
    from .package import DEPLOY_HINTS, PackageError, build

    try:
        entries = build(args.module, args.target, args.out, requirements=args.requirements, pip_args=args.pip_arg or ())
    except PackageError as e:
        print(f"redisq: package error: {e}", file=sys.stderr)
        return 2
    print(f"bundle for {args.target} in {args.out}: {', '.join(entries)}")
    print("deploy: " + DEPLOY_HINTS[args.target].format(out=args.out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="redisq", description="A coordinator for background jobs whose workers are HTTP endpoints.")
    parser.add_argument("--version", action="version", version=f"redisq {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="run the HTTP API and the dispatcher")
    p.add_argument("--config", help="TOML config file (default: $REDISQ_CONFIG)")
    p.add_argument("--redis-url", help="Redis URL (default: config redis_url, $REDISQ_REDIS_URL, else embedded)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 7575)")
    p.set_defaults(func=serve)

    p = commands.add_parser("demo", help="a self-contained tour on the embedded store")
    p.set_defaults(func=demo)

    p = commands.add_parser("package", help="build a deployable bundle of a workers module")
    p.add_argument("module", help="the workers module: path/to/workers.py, a package directory or a module name; "
                                  "MODULE:ATTR names the Workers object (default: workers)")
    p.add_argument("--target", required=True, choices=("lambda", "gcf", "vercel"), help="where it will run")
    p.add_argument("--out", required=True, help="directory to write the bundle to (new or empty)")
    p.add_argument("--requirements", help="the module's dependencies (default: requirements.txt beside it)")
    p.add_argument("--pip-arg", action="append", help="an extra argument for pip (lambda), e.g. --pip-arg=--index-url=URL")
    p.set_defaults(func=package)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
