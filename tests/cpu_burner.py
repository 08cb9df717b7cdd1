"""A CPU burner for timing tests and benchmarks: one busy process per core, at the same
priority as everything else, until the ``with`` block ends (or ``limit_s`` passes, so that
a burner can never outlive a crashed test for long).

    with CpuBurner():
        ...  # the machine is as busy as a CI runner building something else
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

BUSY_LOOP = "import time\nend = time.monotonic() + {limit_s}\nwhile time.monotonic() < end:\n    pass\n"


class CpuBurner:
    def __init__(self, processes: int | None = None, limit_s: float = 600.0):
        self.count = processes or os.cpu_count() or 1
        self.limit_s = limit_s
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuBurner:
        code = BUSY_LOOP.format(limit_s=self.limit_s)
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.count)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait(5)
        self.procs = []
