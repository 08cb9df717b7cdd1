"""Loads the Lua scripts under ``lua/`` once and calls them by sha.

A line ``--!include NAME`` in a script is replaced by ``lua/includes/NAME.lua``, so shared
pieces are written once (as BullMQ does with its ``includes/``). Calls go through
redis-py's ``Script``, which uses EVALSHA and loads the script again on NOSCRIPT (after a
Redis restart or a SCRIPT FLUSH).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

SCRIPT_NAMES = ("enqueue", "claim", "settle", "reap", "cancel", "purge", "set_limits", "worker_state",
                "heartbeat", "hold_back", "schedule_save", "schedule_pause", "schedule_delete", "schedules_due", "tick")
INCLUDE_RE = re.compile(r"^--!include (\w+)$", re.MULTILINE)


def lua_dir() -> Path:
    """``redisq/lua`` inside an installed wheel, else the repository's top-level ``lua/``."""
    packaged = Path(str(resources.files("redisq"))) / "lua"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "lua"


@lru_cache(maxsize=None)
def script_source(name: str) -> str:
    directory = lua_dir()
    source = (directory / f"{name}.lua").read_text()
    return INCLUDE_RE.sub(lambda m: (directory / "includes" / f"{m.group(1)}.lua").read_text(), source)


class Scripts:
    """One registered script per state transition (``SCRIPT_NAMES``), bound to one Redis
    client: ``scripts.registered["claim"](keys=..., args=...)``."""

    def __init__(self, redis: Any):
        self.registered: dict[str, Any] = {name: redis.register_script(script_source(name)) for name in SCRIPT_NAMES}
