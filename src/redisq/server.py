"""``redisq serve``'s process: the listening socket bound first, then the coordinator
started, then uvicorn serving the API on that socket; the coordinator stops after it.
With ``processes`` > 1, the socket is bound here and ``supervisor.py`` forks that many
coordinators onto it.

Every start-up failure is one line on stderr and an exit code (README, Command line): a
port that cannot be bound or Redis that cannot be reached is ``EXIT_FAILURE``; the
config's mistakes are found before this module runs (``EXIT_USAGE``). ``serving on`` is
logged only once the socket is bound and the coordinator has started, so the API answers
from that line on.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .config import Config
from .logs import configure_logging

if TYPE_CHECKING:
    import uvicorn

    from .coordinator import Coordinator

log = logging.getLogger("redisq")

EXIT_OK = 0  # ran, and stopped on SIGTERM/SIGINT
EXIT_FAILURE = 1  # could not start: the port, Redis
EXIT_USAGE = 2  # a command-line or config mistake

LISTEN_BACKLOG = 2048  # uvicorn's default


class CannotListen(Exception):
    """The address and port cannot be bound (in use, not this machine's, privileged)."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket of ``host:port``, bound before anything else starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as e:
        sock.close()
        raise CannotListen(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    return sock


def public_url_port_warning(config: Config) -> str | None:
    """What to warn about when ``public_url`` names another port than the one ``serve``
    listens on: workers post the receipts of their 202 answers there."""
    if not config.public_url:
        return None
    url = urlsplit(config.public_url)
    try:
        named = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:  # a port that is not a number: the worker would find out
        return None
    if named == config.port:
        return None
    return (f"public_url {config.public_url} names port {named} but serve listens on port {config.port}: "
            "workers post the receipts of jobs they answer 202 to public_url, so unless something "
            f"forwards port {named} to this one those jobs time out; set public_url (or --port) to match")


def _server(config: uvicorn.Config, coordinator: Coordinator, failures: list[str],
            exit_signals: Sequence[signal.Signals]) -> uvicorn.Server:
    """uvicorn's server, starting ``coordinator`` before it serves and stopping it after. A
    coordinator that cannot start adds its one line to ``failures`` and nothing is served;
    after a graceful shutdown on SIGTERM/SIGINT the process exits 0 instead of raising the
    captured signal again."""
    import uvicorn

    from .coordinator import StartupFailed

    class CoordinatorServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            try:
                await coordinator.start()
            except StartupFailed as e:  # anything else is a bug, and shows its traceback
                failures.append(str(e))
            if not failures:
                await super().startup(sockets)
            if not self.started:
                self.should_exit = True
                await coordinator.stop()
                return
            settings = coordinator.config
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            await coordinator.announce(f"http://{host}:{settings.port}")

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            coordinator.events.close()  # end the open event streams, or uvicorn waits for them
            try:
                await super().shutdown(sockets)
            finally:
                await coordinator.stop()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in exit_signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return CoordinatorServer(config)


EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(config: Config, loop: str) -> int:
    """Run the coordinator (or ``config.processes`` of them) and the API until SIGTERM/SIGINT;
    the process's exit code."""
    configure_logging(config)
    try:
        sock = bind(config.host, config.port)
    except CannotListen as e:
        print(f"redisq: {e}", file=sys.stderr)
        return EXIT_FAILURE
    if not config.workers:
        log.warning("no workers configured: jobs can only be enqueued for workers named under [workers.NAME]")
    warning = public_url_port_warning(config)
    if warning:
        log.warning(warning)
    try:
        if config.processes > 1:
            from .supervisor import supervise

            return supervise(config, loop, sock, serve_on)
        return serve_on(config, loop, sock, EXIT_SIGNALS)
    finally:
        sock.close()


def serve_on(config: Config, loop: str, sock: socket.socket, exit_signals: Sequence[signal.Signals]) -> int:
    """One coordinator and its API on the bound ``sock`` until one of ``exit_signals``."""
    import uvicorn

    from .api import create_app
    from .coordinator import Coordinator

    coordinator = Coordinator(config)
    failures: list[str] = []
    server = _server(uvicorn.Config(
        create_app(coordinator, manage_lifecycle=False), loop=loop, lifespan="off", log_config=None, log_level=None,
        access_log=config.access_log, timeout_graceful_shutdown=max(1, int(config.shutdown_grace_s) + 1)),
        coordinator, failures, exit_signals)
    server.run(sockets=[sock])
    if failures:
        print(f"redisq: {failures[0]}", file=sys.stderr)
        return EXIT_FAILURE
    if not server.started:
        log.error("redisq could not start (see the errors above)")
        return EXIT_FAILURE
    return EXIT_OK
