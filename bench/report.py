"""Printing figures beside their references, and running coroutines on the fastest loop."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
    uvloop = None  # type: ignore[assignment]


def loop_name() -> str:
    return "uvloop" if uvloop is not None else "asyncio"


def run(main: Callable[[], Awaitable[T]], use_uvloop: bool = True) -> T:
    """``asyncio.run`` on uvloop when it can be imported (and ``use_uvloop``)."""
    if use_uvloop and uvloop is not None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())  # type: ignore[arg-type]


def progress(message: str) -> None:
    print(f"... {message}", flush=True)


def rate(n: float, unit: str = "") -> str:
    """12345.6 -> '12,346'; small values and milliseconds keep decimals."""
    if unit == "ms":
        return f"{n:,.2f}"
    if abs(n) >= 100 or n == 0:
        return f"{n:,.0f}"
    return f"{n:.1f}"


def ratio(value: float, reference: float) -> str:
    if not reference:
        return "n/a"
    r = value / reference
    return f"{r:.3f}x" if r < 0.1 else f"{r:.2f}x"


@dataclass
class Figure:
    """One printed result: a value in a unit, beside a reference measured in the same run."""

    step: str
    label: str
    value: float
    unit: str
    ref_label: str
    ref_value: float
    note: str = ""

    def line(self) -> str:
        note = f"  [{self.note}]" if self.note else ""
        return (f"  {self.label:<50} {rate(self.value, self.unit):>10} {self.unit:<7} vs {self.ref_label} "
                f"{rate(self.ref_value, self.unit)} -> {ratio(self.value, self.ref_value)}{note}")


FIGURES: list[Figure] = []
NOTES: list[str] = []


def figure(step: str, label: str, value: float, unit: str, ref_label: str, ref_value: float, note: str = "") -> Figure:
    f = Figure(step, label, value, unit, ref_label, ref_value, note)
    FIGURES.append(f)
    print(f.line(), flush=True)
    return f


def note(step: str, text: str) -> None:
    NOTES.append(f"[{step}] {text}")
    print(f"  {text}", flush=True)


class Deadline:
    """A time limit for a loop: ``while not deadline.passed: ...``."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.end

    @property
    def left_s(self) -> float:
        return max(0.0, self.end - time.monotonic())


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def _machine_busy_s() -> float | None:
    """CPU seconds all processes on the machine have spent busy since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """How many cores processes outside this benchmark kept busy during a ``with`` block.

    The machine's busy time (/proc/stat) minus this process's and its finished children's;
    the benchmark's own subprocesses (Redis, Node, coordinators) must have stopped by the
    end of the block to be counted as its own."""

    def __enter__(self) -> OtherLoad:
        self.start_wall = time.monotonic()
        self.start_busy = _machine_busy_s()
        self.start_own = _own_cpu_s()
        self.cores: float | None = None
        return self

    def __exit__(self, *exc: Any) -> None:
        end_busy = _machine_busy_s()
        wall = time.monotonic() - self.start_wall
        if self.start_busy is None or end_busy is None or wall <= 0:
            return
        own = _own_cpu_s() - self.start_own
        self.cores = max(0.0, (end_busy - self.start_busy - own) / wall)

    def describe(self) -> str:
        if self.cores is None:
            return "load from other processes: unknown"
        return f"other processes on this machine kept {self.cores:.2f} of {os.cpu_count()} cores busy meanwhile"
