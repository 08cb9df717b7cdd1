"""Loads the Lua scripts under ``lua/`` once and calls them by sha.

A line ``--!include NAME`` puts ``lua/includes/NAME.lua`` in its place, so shared pieces
are written once (as BullMQ does with its ``includes/``). Includes name their own
includes; each file goes into a script once (a second include of it is skipped), and a
cycle or an unknown name is refused with a ``LuaIncludeError`` that says where.

A script that must run while Redis is at ``maxmemory`` (it frees memory or holds it steady:
claim, settle, reap, purge, cancel, heartbeat, hold_back, migrate_fields, and an operator's
set_limits, schedule_pause, schedule_delete) says so on its first line,
``#!lua flags=allow-oom``; the others are refused there at their first write.

The loader keeps a line map (flattened line -> source file and line), so an error that
Redis reports in a script (``user_script:123: ...``) is re-raised naming the source file:
``lua/includes/jobs.lua:40: ...``. Calls go through redis-py's ``Script``, which uses
EVALSHA and loads the script again on NOSCRIPT (after a Redis restart or a SCRIPT FLUSH).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError
from redis.typing import EncodableT, KeyT

from .types import ScriptReply

if TYPE_CHECKING:
    from .connection import RedisClient

SCRIPT_NAMES = ("enqueue", "claim", "settle", "reap", "cancel", "purge", "set_limits", "worker_state",
                "heartbeat", "hold_back", "lease", "retry", "delete", "list", "list_scheduled", "throttle_keys",
                "coordinator_alive", "coordinators", "limit_state", "pause_limit_key",
                "report_cost", "migrate_fields")
SCHEDULE_SCRIPT_NAMES = ("schedule_save", "schedule_pause", "schedule_delete", "schedules_due", "tick")
INCLUDE_DIRECTIVE = "--!include"
INCLUDE_RE = re.compile(r"^--!include (\w+)$")
# A line number in an error reply: Redis 7 says `user_script:12:` and `@user_script:12.`,
# fakeredis (Lua through lupa) says `[string "<python>"]:12:`.
ERROR_LINE_RE = re.compile(r'@?user_script:(\d+)|\[string "<python>"\]:(\d+)')


class LuaIncludeError(ValueError):
    """A script's includes cannot be resolved: an unknown name, a malformed line or a cycle."""


@dataclass(frozen=True)
class SourceLine:
    """Where a line of a flattened script was written: ``lua/includes/jobs.lua``, line 40."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class LoadedScript:
    """A script with its includes in place, and where each of its lines comes from."""

    name: str
    source: str
    origins: tuple[SourceLine, ...]  # flattened line n (1-based) was written at origins[n - 1]

    def origin(self, line: int) -> SourceLine | None:
        return self.origins[line - 1] if 1 <= line <= len(self.origins) else None


def lua_dir() -> Path:
    """``redisq/lua`` inside an installed wheel, else the repository's top-level ``lua/``."""
    packaged = Path(str(resources.files("redisq"))) / "lua"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "lua"


def flatten(name: str, directory: Path) -> LoadedScript:
    """``directory/NAME.lua`` with its includes (from ``directory/includes/``) resolved."""
    lines: list[str] = []
    origins: list[SourceLine] = []
    _append_file(directory, f"{name}.lua", [name], set(), lines, origins)
    return LoadedScript(name, "".join(f"{line}\n" for line in lines), tuple(origins))


def _append_file(directory: Path, relative_path: str, chain: list[str], included: set[str],
                 lines: list[str], origins: list[SourceLine]) -> None:
    """Append one file's lines, each include in place of its directive (depth first)."""
    shown_path = f"lua/{relative_path}"
    for number, line in enumerate((directory / relative_path).read_text().splitlines(), start=1):
        if not line.startswith(INCLUDE_DIRECTIVE):
            lines.append(line)
            origins.append(SourceLine(shown_path, number))
            continue
        match = INCLUDE_RE.match(line.rstrip())
        if match is None:
            raise LuaIncludeError(f"{shown_path}:{number}: malformed include {line!r} (expected '--!include NAME')")
        include = match.group(1)
        if include in chain:
            raise LuaIncludeError(f"lua include cycle: {' -> '.join([*chain, include])}")
        if include in included:
            continue  # already in the script, above
        include_path = f"includes/{include}.lua"
        if not (directory / include_path).is_file():
            raise LuaIncludeError(f"{shown_path}:{number}: unknown include {include!r} (no lua/{include_path})")
        included.add(include)
        _append_file(directory, include_path, [*chain, include], included, lines, origins)


@cache
def load_script(name: str) -> LoadedScript:
    return flatten(name, lua_dir())


def script_source(name: str) -> str:
    return load_script(name).source


def rewrite_error(message: str, script: LoadedScript) -> str:
    """An error reply's flattened line numbers replaced by the source files and lines."""
    def source_of(match: re.Match[str]) -> str:
        origin = script.origin(int(match.group(1) or match.group(2)))
        return match.group(0) if origin is None else str(origin)

    return ERROR_LINE_RE.sub(source_of, message)


FLAGS_LINE = "#!lua"  # a script's first line may declare its flags: `#!lua flags=allow-oom`


def source_for(redis: RedisClient, script: LoadedScript) -> str:
    """The script as the client's server takes it. Redis 7 reads a first line
    ``#!lua flags=allow-oom`` (a script that frees memory, or holds it steady, and must run
    while Redis is at ``maxmemory``); the embedded store's Lua would take it for code, so
    there it becomes a comment (the line numbers stay)."""
    if script.source.startswith(FLAGS_LINE) and type(redis).__module__.startswith("fakeredis"):
        return "--" + script.source[2:]
    return script.source


class RegisteredScript:
    """redis-py's ``Script`` for one loaded script; its errors name the source lines."""

    def __init__(self, redis: RedisClient, script: LoadedScript):
        self.script = script
        self._registered = redis.register_script(source_for(redis, script))

    async def __call__(self, keys: Sequence[KeyT] = (), args: Sequence[EncodableT] = (),
                       client: RedisClient | None = None) -> ScriptReply:
        try:
            reply: ScriptReply = await self._registered(keys=keys, args=args, client=client)
        except ResponseError as e:
            message = rewrite_error(str(e), self.script)
            if message == str(e):
                raise
            raise type(e)(message) from e
        return reply


def register(redis: RedisClient, name: str) -> RegisteredScript:
    return RegisteredScript(redis, load_script(name))


class Scripts:
    """Every script (``SCRIPT_NAMES`` and ``SCHEDULE_SCRIPT_NAMES``) registered once, bound to
    one Redis client: ``scripts.registered["claim"](keys=..., args=...)``."""

    def __init__(self, redis: RedisClient):
        self.registered: dict[str, RegisteredScript] = {
            name: register(redis, name) for name in (*SCRIPT_NAMES, *SCHEDULE_SCRIPT_NAMES)}
