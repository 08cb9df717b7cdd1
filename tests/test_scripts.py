"""The script loader (``redisq.scripts``): includes resolved transitively and once, cycles
and unknown names refused, errors named by their source file and line; and the includes
under ``lua/includes/`` are pure: functions and constants only."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ResponseError

from redisq.config import DEFAULT_TIMEOUT_S, Backoff, Config, WorkerConfig
from redisq.engine import Engine
from redisq.scripts import (
    FLAGS_LINE,
    SCHEDULE_SCRIPT_NAMES,
    SCRIPT_NAMES,
    LoadedScript,
    LuaIncludeError,
    RegisteredScript,
    SourceLine,
    flatten,
    load_script,
    lua_dir,
    rewrite_error,
    source_for,
)


def lua_tree(directory: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path below lua/ -> text) under ``directory``; returns it."""
    for relative_path, text in files.items():
        path = directory / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def test_includes_resolve_transitively_each_before_the_file_that_names_it(tmp_path: Path) -> None:
    lua = lua_tree(tmp_path, {
        "main.lua": "--!include outer\nreturn outer()\n",
        "includes/outer.lua": "--!include inner\nlocal function outer() return inner() end\n",
        "includes/inner.lua": "local function inner() return 1 end\n",
    })
    assert flatten("main", lua).source == (
        "local function inner() return 1 end\nlocal function outer() return inner() end\nreturn outer()\n")


def test_a_file_included_twice_goes_in_once(tmp_path: Path) -> None:
    lua = lua_tree(tmp_path, {
        "main.lua": "--!include common\n--!include jobs\n--!include common\nreturn 1\n",
        "includes/jobs.lua": "--!include common\nlocal function jobs() end\n",
        "includes/common.lua": "local function common() end\n",
    })
    assert flatten("main", lua).source == "local function common() end\nlocal function jobs() end\nreturn 1\n"


def test_an_include_cycle_is_refused_naming_the_chain(tmp_path: Path) -> None:
    lua = lua_tree(tmp_path, {
        "claim.lua": "--!include jobs\nreturn 1\n",
        "includes/jobs.lua": "--!include common\n",
        "includes/common.lua": "local A = 1\n--!include jobs\n",
    })
    with pytest.raises(LuaIncludeError, match="^lua include cycle: claim -> jobs -> common -> jobs$"):
        flatten("claim", lua)


def test_an_unknown_include_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    lua = lua_tree(tmp_path, {
        "claim.lua": "--!include jobs\nreturn 1\n",
        "includes/jobs.lua": "-- jobs\n\n--!include comon\n",
    })
    with pytest.raises(LuaIncludeError, match=r"^lua/includes/jobs\.lua:3: unknown include 'comon' "
                                              r"\(no lua/includes/comon\.lua\)$"):
        flatten("claim", lua)


def test_a_malformed_include_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    lua = lua_tree(tmp_path, {"claim.lua": "return 1\n--!include jobs.lua\n"})
    with pytest.raises(LuaIncludeError, match=r"^lua/claim\.lua:2: malformed include '--!include jobs\.lua'"):
        flatten("claim", lua)


def test_the_line_map_names_the_file_and_line_each_flattened_line_was_written_at(tmp_path: Path) -> None:
    lua = lua_tree(tmp_path, {
        "main.lua": "-- main\n--!include helper\nreturn helper()\n",
        "includes/helper.lua": "-- helper\nlocal function helper() return 1 end\n",
    })
    script = flatten("main", lua)
    assert script.origins == (
        SourceLine("lua/main.lua", 1), SourceLine("lua/includes/helper.lua", 1),
        SourceLine("lua/includes/helper.lua", 2), SourceLine("lua/main.lua", 3),
    )
    assert script.origin(3) == SourceLine("lua/includes/helper.lua", 2) and script.origin(5) is None


def test_error_replies_of_redis_and_of_fakeredis_are_rewritten_to_source_lines() -> None:
    script = LoadedScript("main", "", (SourceLine("lua/main.lua", 1), SourceLine("lua/includes/jobs.lua", 40)))
    redis_reply = ("user_script:2: attempt to index local 'x' (a nil value) script: 86197dcd, "
                   "on @user_script:2.")
    assert rewrite_error(redis_reply, script) == (
        "lua/includes/jobs.lua:40: attempt to index local 'x' (a nil value) script: 86197dcd, "
        "on lua/includes/jobs.lua:40.")
    fakeredis_reply = ('Error running script (call to f_86197dcd): @user_script:?: [string "<python>"]:2: boom\n'
                       'stack traceback:\n\t[string "<python>"]:1: in main chunk')
    assert rewrite_error(fakeredis_reply, script) == (
        "Error running script (call to f_86197dcd): @user_script:?: lua/includes/jobs.lua:40: boom\n"
        "stack traceback:\n\tlua/main.lua:1: in main chunk")
    assert rewrite_error("user_script:9: beyond the script", script) == "user_script:9: beyond the script"


async def test_an_error_in_an_included_file_names_that_file_and_line(engine_redis: Any, tmp_path: Path) -> None:
    lua = lua_tree(tmp_path, {
        "failing.lua": "-- a script that fails in its include\n--!include broken\nreturn broken({})\n",
        "includes/broken.lua":
            "-- fails on purpose\nlocal function broken(settings)\n  return settings.missing.field\nend\n",
    })
    failing = RegisteredScript(engine_redis, flatten("failing", lua))
    with pytest.raises(ResponseError) as caught:
        await failing()
    assert type(caught.value) is ResponseError
    message = str(caught.value)
    assert "lua/includes/broken.lua:3:" in message and "attempt to index" in message
    assert "user_script:3" not in message and '"<python>"' not in message
    assert caught.value.__cause__ is not None and ":4:" in str(caught.value.__cause__)  # the flattened line


async def test_an_error_without_a_line_is_raised_as_it_came(engine_redis: Any, tmp_path: Path) -> None:
    lua = lua_tree(tmp_path, {"refusing.lua": "return redis.error_reply('REFUSED on purpose')\n"})
    refusing = RegisteredScript(engine_redis, flatten("refusing", lua))
    with pytest.raises(ResponseError, match="^REFUSED on purpose$"):
        await refusing()


def test_every_lua_script_is_named_for_its_loader() -> None:
    on_disk = {path.stem for path in lua_dir().glob("*.lua")}
    assert on_disk == set(SCRIPT_NAMES) | set(SCHEDULE_SCRIPT_NAMES)


@pytest.mark.parametrize("name", [*SCRIPT_NAMES, *SCHEDULE_SCRIPT_NAMES])
async def test_every_script_loads_and_compiles(name: str, real_redis: Any) -> None:
    script = load_script(name)
    assert "--!include" not in script.source and len(script.origins) == script.source.count("\n")
    assert await real_redis.script_load(script.source)  # Redis compiles it: a syntax error is refused here


# At the top level of an include: a function, its end, a constant (a number, a string, or a
# table of them: fields.lua's F, whose entries tests/test_job_fields.py reads), or an
# include; nothing that runs.
INCLUDE_TOP_LEVEL_RE = re.compile(
    r"^(local function \w+\(.*|end|local [A-Z][A-Z0-9_]* = (\d+|'[^']*'|\{)|\}|--!include \w+)$")


def code_of(line: str) -> str:
    """The line without its comment (the includes put no '--' inside strings)."""
    return line.split("--", 1)[0].rstrip() if not line.startswith("--!include") else line


@pytest.mark.parametrize("include", sorted(path.name for path in (lua_dir() / "includes").glob("*.lua")))
def test_an_include_defines_functions_and_constants_only(include: str) -> None:
    lines = (lua_dir() / "includes" / include).read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        code = code_of(line)
        where = f"lua/includes/{include}:{number}: {line.strip()}"
        assert not re.search(r"\b(KEYS|ARGV)\b", code), \
            f"{where}: an include is given what it needs, never reads KEYS/ARGV"
        assert "math.randomseed" not in code, f"{where}: the script seeds the random numbers, not an include"
        if code and not code[0].isspace():
            assert INCLUDE_TOP_LEVEL_RE.match(code), f"{where}: runs at include time (or is mutable state)"


def test_the_lua_default_timeout_is_config_py_s() -> None:
    text = (lua_dir() / "includes" / "limits.lua").read_text()
    (timeout_ms,) = re.findall(r"^local DEFAULT_TIMEOUT_MS = (\d+)$", text, re.MULTILINE)
    assert int(timeout_ms) == DEFAULT_TIMEOUT_S * 1000


async def backoff_delays_s(redis: Any, tmp_path: Path, backoff: Backoff, attempts_and_fractions: list[tuple[int, float]]
                           ) -> list[float]:
    """The delays ``backoff_ms`` (lua/includes/attempts.lua, as settle and reap run it) gives
    after each number of failed attempts with each random fraction, from the worker's policy
    as the store sends it to settle."""
    shutil.copytree(lua_dir() / "includes", tmp_path / "includes")
    lua = lua_tree(tmp_path, {"backoff.lua": (
        "--!include attempts\n"
        "local policy = retry_policy(ARGV[6], ARGV[7], ARGV[8], ARGV[9])  -- as settle.lua\n"
        "local delays = {}\n"
        "for i = 11, #ARGV, 2 do "
        "delays[#delays + 1] = backoff_ms(policy, tonumber(ARGV[i]), tonumber(ARGV[i + 1])) end\n"
        "return delays\n")})
    worker = WorkerConfig(name="w", url="http://127.0.0.1:9/w", backoff=backoff)
    policy_args = Engine(redis, Config(workers={"w": worker})).worker("w")._policy_args()
    script = RegisteredScript(redis, flatten("backoff", lua))
    delays_ms = await script(args=[*policy_args, *(x for pair in attempts_and_fractions for x in pair)])
    return [int(ms) / 1000 for ms in delays_ms]


async def test_backoff_delay(engine_redis: Any, tmp_path: Path) -> None:
    backoff = Backoff(initial_s=1.0, factor=2.0, max_s=10.0, jitter=False)
    delays = await backoff_delays_s(engine_redis, tmp_path / "plain", backoff, [(n, 1.0) for n in range(1, 7)])
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    jittered = await backoff_delays_s(engine_redis, tmp_path / "jitter", Backoff(1.0, 2.0, 10.0, jitter=True),
                                      [(3, 0.25)])
    assert jittered == [1.0]


def test_the_scripts_that_move_jobs_on_or_free_memory_run_at_maxmemory_and_no_others():
    # Redis 7 reads the flag from the first line; at maxmemory the unflagged scripts are
    # refused at their first write (tests/faults/test_maxmemory.py shows both)
    flagged = {name for name in (*SCRIPT_NAMES, *SCHEDULE_SCRIPT_NAMES)
               if load_script(name).source.startswith(f"{FLAGS_LINE} flags=allow-oom\n")}
    # report_cost goes before the settle it belongs to (a refused one would hold the settle
    # back); pause_limit_key is an operator's pause of a shared limit's key, as set_limits;
    # migrate_fields makes hashes smaller, and dispatch waits for it
    assert flagged == {"claim", "settle", "reap", "purge", "cancel", "heartbeat", "hold_back", "set_limits",
                       "schedule_pause", "schedule_delete", "retry", "delete", "report_cost", "pause_limit_key",
                       "migrate_fields"}


def test_the_embedded_store_gets_the_flags_line_as_a_comment_with_the_line_numbers_kept():
    import fakeredis

    claim = load_script("claim")
    embedded = source_for(fakeredis.aioredis.FakeRedis(), claim)
    assert embedded.startswith("--lua flags=allow-oom\n")
    assert embedded.splitlines()[1:] == claim.source.splitlines()[1:]
