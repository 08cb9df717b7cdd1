"""``redisq serve --processes N``: N coordinator processes on one port, and their parent.

The parent binds the listening socket (so a port that cannot be bound is one error, before
anything starts), then forks N children that share it: the kernel hands each new connection
to one of them. Each child is a whole coordinator, as one ``redisq serve`` is (its own API
server, dispatcher, poller and Redis connections; its coordinator id is ``host:pid``), so
limits, cron and receipts stay exact across them as across coordinators on one Redis.
The parent does nothing else: it waits for its children.

- A child that dies is forked again, after a delay that doubles (from ``RESTART_MIN_S`` to
  ``RESTART_MAX_S``) while children keep dying soon after their start, and falls back once
  one has run for ``HEALTHY_AFTER_S``; each death and restart is logged.
- A child of the first round that cannot start (Redis unreachable: it prints its one line
  and exits ``EXIT_FAILURE``) stops the others, and the parent exits ``EXIT_FAILURE``; one
  started later in place of a dead one is started again instead.
- SIGTERM or SIGINT to the parent is passed to every child as SIGTERM: each drains as one
  coordinator does (in-flight calls get ``shutdown_grace``), and the parent exits 0 once all
  have exited 0. A child still running ``shutdown_grace`` + ``KILL_AFTER_GRACE_S`` later is
  killed. The children ignore SIGINT, so Ctrl-C in a terminal (which signals the whole
  process group) drains each child once, through the parent.
- A child whose parent is killed (SIGKILL) gets SIGTERM from the kernel and drains too.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .config import Config
from .server import EXIT_FAILURE, EXIT_OK

log = logging.getLogger("redisq")

RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
HEALTHY_AFTER_S = 10.0  # a child that ran this long resets the restart delay
KILL_AFTER_GRACE_S = 10.0  # past shutdown_grace, a child that has not exited is killed
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies

# one coordinator on the socket, stopping on the signals given: its exit code
ServeOn = Callable[[Config, str, socket.socket, Sequence[signal.Signals]], int]


@dataclass
class Children:
    """The children by pid, when each started, and the restart delay."""

    started_at: dict[int, float] = field(default_factory=dict)
    first_round: set[int] = field(default_factory=set)  # the first N: one that cannot start stops all
    restart_delay_s: float = RESTART_MIN_S


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent dies (elsewhere: nothing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _exit_code(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


class Supervisor:
    def __init__(self, config: Config, loop: str, sock: socket.socket, serve_on: ServeOn):
        self.config = config
        self.loop = loop
        self.sock = sock
        self.serve_on = serve_on
        self.children = Children()
        self.stopping = False
        self.failed = False  # a child exited non-zero while stopping, or the first round could not start

    def _fork(self) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: one coordinator on the shared socket, then out
            code = EXIT_FAILURE
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, lambda *_: os._exit(EXIT_OK))  # until the server takes it over
                _die_with_parent()
                if os.getppid() != parent:  # the parent died before the request above
                    os._exit(EXIT_OK)
                code = self.serve_on(self.config, self.loop, self.sock, (signal.SIGTERM,))
            except BaseException:
                log.exception("coordinator process %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        self.children.started_at[pid] = time.monotonic()
        return pid

    def _stop(self, signum: int, frame: object) -> None:
        if not self.stopping:
            log.info("%s: draining %d coordinator processes", signal.Signals(signum).name,
                     len(self.children.started_at))
        self.stopping = True
        for pid in list(self.children.started_at):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for _ in range(self.config.processes):
                self.children.first_round.add(self._fork())
            log.info("started %d coordinator processes (pids %s)", self.config.processes,
                     ", ".join(map(str, self.children.started_at)))
            while not self.stopping:
                pid, status = os.waitpid(-1, 0)  # signals interrupt it and run _stop; it then goes on
                started = self.children.started_at.pop(pid, None)
                if started is None:
                    continue
                if self.stopping:
                    self._reaped(pid, status)
                    break
                lived_s = time.monotonic() - started
                # EXIT_FAILURE is a coordinator that could not start (serve_on): in the first round,
                # the others would not either (a restart later may: Redis may be back by then)
                if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_FAILURE and pid in self.children.first_round:
                    log.error("coordinator process %d could not start; stopping the others", pid)
                    self.failed = True
                    self._stop(signal.SIGTERM, None)
                    break
                self._restart(pid, status, lived_s)
            self._drain()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return EXIT_FAILURE if self.failed else EXIT_OK

    def _restart(self, pid: int, status: int, lived_s: float) -> None:
        children = self.children
        if lived_s >= HEALTHY_AFTER_S:
            children.restart_delay_s = RESTART_MIN_S
        delay_s = children.restart_delay_s
        children.restart_delay_s = min(RESTART_MAX_S, delay_s * 2)
        log.warning("coordinator process %d %s after %.1f s; starting another in %.1f s", pid, _exit_code(status),
                    lived_s, delay_s)
        restart_at = time.monotonic() + delay_s
        while time.monotonic() < restart_at:
            if self.stopping:  # a signal meanwhile ran _stop
                return
            time.sleep(min(0.05, max(0.0, restart_at - time.monotonic())))
        new_pid = self._fork()
        log.info("coordinator process %d started in place of %d", new_pid, pid)

    def _reaped(self, pid: int, status: int) -> None:
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_OK):
            log.warning("coordinator process %d %s while draining", pid, _exit_code(status))
            self.failed = True

    def _drain(self) -> None:
        """Wait for the children, SIGTERMed already; kill those still running past the grace."""
        kill_at = time.monotonic() + self.config.shutdown_grace_s + KILL_AFTER_GRACE_S
        while self.children.started_at:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if time.monotonic() > kill_at:
                    for stuck in self.children.started_at:
                        log.warning("coordinator process %d still running %.0f s after SIGTERM: killed", stuck,
                                    self.config.shutdown_grace_s + KILL_AFTER_GRACE_S)
                        os.kill(stuck, signal.SIGKILL)
                    kill_at = float("inf")
                time.sleep(0.05)
                continue
            if self.children.started_at.pop(pid, None) is not None:
                self._reaped(pid, status)


def supervise(config: Config, loop: str, sock: socket.socket, serve_on: ServeOn) -> int:
    """Run ``config.processes`` children of ``serve_on`` on ``sock`` until SIGTERM/SIGINT."""
    return Supervisor(config, loop, sock, serve_on).run()
