"""The command line: ``redisq serve``, ``demo``, ``workers``, ``jobs``, ``enqueue``,
``schedules`` and ``package``. All but ``serve``, ``demo`` and ``package`` ask a running
coordinator's HTTP API (``--url``, ``--token``) and print tables, or its JSON with ``--json``."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .config import MAX_PORT, ConfigError, check_cluster_url, check_redis_url, load_config, processes_of
from .server import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as `yes | head -1` ends: the reader stopped before the end
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C while following a bulk operation (which goes on)


def _event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def serve(args: argparse.Namespace) -> int:
    from .server import serve as serve_until_stopped

    try:
        config = check_cluster_url(load_config(args.config).with_overrides(
            redis_url=check_redis_url("command line", "--redis-url", args.redis_url), host=args.host, port=args.port,
            processes=None if args.processes is None else processes_of("command line", "--processes", args.processes)),
            "command line")
        if config.processes > 1 and not config.redis_url:
            source = args.config or os.environ.get("REDISQ_CONFIG") or "command line"
            raise ConfigError(f"{source}: processes: {config.processes} coordinator processes need a redis_url to "
                              "share (the embedded store lives inside one process)")
    except ConfigError as e:
        print(f"redisq: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return serve_until_stopped(config, loop=_event_loop_name())


def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(loop=_event_loop_name())


class ApiCallFailed(Exception):
    """The coordinator could not be reached, or answered an error (already printed)."""


class StoppedFollowing(Exception):
    """Ctrl-C while a bulk operation was followed: it goes on in the coordinator (already said)."""


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
        except StoppedFollowing:
            return EXIT_INTERRUPTED
    return run


@_api_command
def schedules(args: argparse.Namespace) -> int:
    """``redisq schedules`` lists (``GET /schedules``); ``delete ID``, ``pause ID``, ``resume ID`` change one."""
    if args.action == "delete":
        listed = [_call_api(args, "DELETE", f"/schedule/{args.id}")]
    elif args.action in ("pause", "resume"):
        listed = [_call_api(args, "POST", f"/schedule/{args.id}/{args.action}")]
    else:
        params = {"worker": args.worker} if args.worker else None
        listed = _call_api(args, "GET", "/schedules", params=params)["schedules"]
    if args.json:
        _print_json(listed if args.action is None else listed[0])
    elif args.action == "delete":
        print(f"deleted {listed[0]['id']} (the jobs it created stay)")
    else:
        _print_schedules(listed)
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


def _live_command(args: argparse.Namespace, resource: str, printer: Callable[[list[dict[str, Any]]], None],
                  refusal: Callable[[dict[str, float | None]], str | None], pause_body: Any = None) -> int:
    """``redisq workers|limits``: list the resource, or ``set NAME k=v ...`` (refused when
    ``refusal`` says why), ``pause NAME``, ``resume NAME`` one of them."""
    if args.action == "set":
        try:
            body = _parse_settings(args.settings)
        except ValueError as e:
            print(f"redisq: {e}", file=sys.stderr)
            return EXIT_USAGE
        refused = refusal(body)
        if refused:
            print(f"redisq: {resource} set: {refused}", file=sys.stderr)
            return EXIT_USAGE
        listed = [_call_api(args, "PATCH", f"/{resource}/{args.name}", body)]
    elif args.action in ("pause", "resume"):
        listed = [_call_api(args, "POST", f"/{resource}/{args.name}/{args.action}", pause_body)]
    else:
        listed = _call_api(args, "GET", f"/{resource}")[resource]
    if args.json:
        print(json.dumps(listed if args.action is None else listed[0], indent=2))
    else:
        printer(listed)
    return EXIT_OK


@_api_command
def workers(args: argparse.Namespace) -> int:
    """``redisq workers`` lists; ``set NAME k=v ...``, ``pause NAME``, ``resume NAME`` change."""
    return _live_command(args, "workers", _print_workers,
                         lambda body: None if body else "give at least one NAME=VALUE, e.g. rate=10")


def _print_limits(listed: list[dict[str, Any]]) -> None:
    rows = [("NAME", "RATE", "BURST", "CONCURRENCY", "TOTAL RATE", "STATE", "RUNNING", "PAUSED KEYS", "WORKERS")]
    for limit in listed:
        live = limit["limits"]
        rows.append((limit["name"], _number(live["rate"]), _number(live["burst"]), _number(live["concurrency"]),
                     _number(live["totalRate"]), "paused" if live["paused"] else "active", str(limit["running"]),
                     str(len(limit["pausedKeys"])), ",".join(limit["workers"]) or "-"))
    _print_table(rows)


@_api_command
def limits(args: argparse.Namespace) -> int:
    """``redisq limits`` lists the shared limits; ``set NAME k=v ...``, ``pause NAME [--key K]``,
    ``resume NAME [--key K]`` change one (or one of its throttle keys)."""
    return _live_command(
        args, "limits", _print_limits,
        lambda body: None if body and "timeout" not in body else
        "give NAME=VALUE of rate, burst, concurrency, total_rate or total_burst",
        {"key": args.key} if getattr(args, "key", None) is not None else None)


JOB_STATES = ("scheduled", "running", "retrying", "succeeded", "dead", "cancelled")
RETRY_STATES = ("dead", "cancelled")
FINISHED_STATES = ("succeeded", "dead", "cancelled")
MAX_PAGE = 1000  # GET /jobs answers at most this many jobs a page
OPERATION_POLL_S = 0.25  # how often a bulk operation that goes on in the background is read
SHOWN_ERROR_CHARS = 60  # a table cuts a job's last error to this many characters


def _when(text: str | None) -> str:
    """An API time (ISO 8601 UTC) as a table shows it: ``2026-12-02 09:00:00``."""
    return "-" if text is None else text.replace("T", " ")[:19]


def _cut(text: str | None, chars: int = SHOWN_ERROR_CHARS) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars - 3] + "..."


def _print_jobs(jobs: Sequence[dict[str, Any]]) -> None:
    rows = [("ID", "STATE", "ATTEMPTS", "RUN AT (UTC)", "FINISHED AT", "KEY", "LAST ERROR")]
    for job in jobs:
        rows.append((job["id"], job["state"], f"{job['attempts']}/{job['maxAttempts']}", _when(job["runAt"]),
                     _when(job.get("finishedAt")), job.get("throttleKey") or "-", _cut(job.get("lastError"))))
    _print_table(rows)


def _print_schedules(listed: Sequence[dict[str, Any]]) -> None:
    rows = [("ID", "CRON", "TIMEZONE", "STATE", "NEXT RUN", "LAST FIRE")]
    for s in listed:
        rows.append((s["id"], s["cron"], s["timezone"], "paused" if s["paused"] else "active",
                     s["nextRunAt"] or "-", s["lastFireAt"] or "-"))
    _print_table(rows)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _worker_names(args: argparse.Namespace) -> list[str]:
    """``--worker``, or every worker the coordinator has."""
    if args.worker:
        return [args.worker]
    return [w["name"] for w in _call_api(args, "GET", "/workers")["workers"]]


def _per_worker(args: argparse.Namespace, answers: dict[str, Any]) -> Any:
    """What --json prints: one worker's answer with --worker, else the answers keyed by worker."""
    return answers[args.worker] if args.worker else answers


def _list_pages(args: argparse.Namespace, worker: str) -> dict[str, Any]:
    """GET /jobs for one worker: one page of ``--limit``, or with ``--all`` every page."""
    params = {"worker": worker, "state": args.state, "limit": str(args.limit)}
    if args.key is not None:
        params["throttleKey"] = args.key
    if args.cursor is not None:
        params["cursor"] = args.cursor
    listed = _call_api(args, "GET", "/jobs", params=params)
    while args.all and listed["next"] is not None:
        page = _call_api(args, "GET", "/jobs", params={**params, "cursor": listed["next"]})
        listed = {**page, "jobs": listed["jobs"] + page["jobs"]}
    return dict(listed)


def jobs_list(args: argparse.Namespace) -> int:
    answers = {worker: _list_pages(args, worker) for worker in _worker_names(args)}
    if args.json:
        _print_json(_per_worker(args, answers))
        return EXIT_OK
    jobs = [job for listed in answers.values() for job in listed["jobs"]]
    if jobs:
        _print_jobs(jobs)
    else:
        print(f"no {args.state} jobs")
    for worker, listed in answers.items():
        if listed["next"] is not None:
            print(f"redisq: {worker} has {listed['counts'][args.state]} {args.state} jobs; --all lists every one, "
                  f"--cursor {listed['next']} the next page", file=sys.stderr)
    return EXIT_OK


def _print_job(job: dict[str, Any]) -> None:
    fields = [("id", job["id"]), ("worker", job["worker"]), ("state", job["state"]),
              ("attempts", f"{job['attempts']} of {job['maxAttempts']}"), ("run at", _when(job["runAt"])),
              ("created at", _when(job.get("createdAt"))), ("finished at", _when(job.get("finishedAt"))),
              ("throttle key", job.get("throttleKey") or "-"), ("args", json.dumps(job.get("args"))),
              ("last error", job.get("lastError") or "-"), ("result", json.dumps(job.get("result")))]
    _print_table([(f"{name}:", str(value)) for name, value in fields])
    history = job.get("history") or []
    print()
    if not history:
        print("no attempts yet")
        return
    rows = [("ATTEMPT", "STARTED (UTC)", "ENDED", "DURATION", "OUTCOME", "STATUS", "ERROR", "COORDINATOR")]
    for a in history:
        duration = "-" if a.get("durationMs") is None else f"{a['durationMs']} ms"
        rows.append((str(a["attempt"]), _when(a.get("startedAt")), _when(a.get("endedAt")), duration,
                     a.get("outcome") or "-", _number(a.get("status")), _cut(a.get("error")),
                     a.get("coordinator") or "-"))
    _print_table(rows)


def jobs_show(args: argparse.Namespace) -> int:
    job = _call_api(args, "GET", f"/job/{args.id}")
    if args.json:
        _print_json(job)
    else:
        _print_job(job)
    return EXIT_OK


def _each_id(args: argparse.Namespace, call: Callable[[str], dict[str, Any]]) -> int:
    """``call`` for each of ``args.ids``, on to the next when one fails (its error is printed);
    the jobs it answers printed together. EXIT_FAILURE when any failed."""
    done, failed = [], False
    for job_id in args.ids:
        try:
            done.append(call(job_id))
        except ApiCallFailed:
            failed = True
    if args.json:
        _print_json(done[0] if len(args.ids) == 1 and done else done)
    elif done:
        _print_jobs(done)
    return EXIT_FAILURE if failed else EXIT_OK


def _follow(args: argparse.Namespace, kind: str, worker: str, answer: dict[str, Any]) -> dict[str, Any]:
    """A bulk operation's last answer: when it goes on in the background (202), read GET
    /operations/{op} until done, with a progress bar on stderr when it is a terminal."""
    from tqdm import tqdm

    count = "retried" if kind == "retry" else "deleted"
    if answer["done"]:
        return answer
    operation = answer["operation"]
    try:
        with tqdm(desc=f"{count} ({worker}, {args.state})", total=answer.get("total"), initial=answer[count],
                  unit=" jobs", file=sys.stderr, disable=None) as bar:
            while not answer["done"]:
                time.sleep(OPERATION_POLL_S)
                answer = _call_api(args, "GET", f"/operations/{operation}")
                if answer.get("total") is not None:
                    bar.total = answer["total"]
                bar.update(answer[count] - bar.n)
    except KeyboardInterrupt:
        print(f"redisq: stopped following; operation {operation} goes on in the coordinator "
              f"(GET /operations/{operation})", file=sys.stderr)
        raise StoppedFollowing() from None
    return answer


def _bulk(args: argparse.Namespace, kind: str, fields: dict[str, Any] | None = None) -> int:
    """POST /jobs/retry or /jobs/delete with ``all`` (and ``fields``) for each worker,
    followed until done."""
    count = "retried" if kind == "retry" else "deleted"
    body: dict[str, Any] = {**(fields or {}), "state": args.state, "all": True}
    if args.limit is not None:
        body["limit"] = args.limit
    answers = {}
    for worker in _worker_names(args):
        answers[worker] = answer = _follow(args, kind, worker,
                                           _call_api(args, "POST", f"/jobs/{kind}", {**body, "worker": worker}))
        if answer.get("error"):
            print(f"redisq: {kind} of {worker}'s {args.state} jobs stopped after {answer[count]}: {answer['error']}",
                  file=sys.stderr)
            return EXIT_FAILURE
        if not args.json:
            print(f"{count} {answer[count]} {args.state} jobs of {worker}")
    if args.json:
        _print_json(_per_worker(args, answers))
    return EXIT_OK


def _usage_error(message: str) -> int:
    print(f"redisq: {message}", file=sys.stderr)
    return EXIT_USAGE


def _check_ids_or_all(args: argparse.Namespace, command: str) -> str | None:
    """The usage error of ``jobs retry|delete`` (IDs, or --all; not both), or None."""
    if args.ids and args.all:
        return f"jobs {command}: give job ids or --all, not both"
    if not args.ids and not args.all:
        return f"jobs {command}: give job ids, or --all (with --worker W --state S)"
    if args.ids and args.limit is not None:
        return f"jobs {command}: --limit goes with --all"
    return None


def jobs_retry(args: argparse.Namespace) -> int:
    mistake = _check_ids_or_all(args, "retry")
    if mistake is None and args.delay is not None and args.run_at is not None:
        mistake = "jobs retry: give --delay or --run-at, not both"
    body: dict[str, Any] = {}
    if mistake is None and args.args is not None:
        try:
            body["args"] = json.loads(args.args)
        except ValueError as e:
            mistake = f"jobs retry: --args is not JSON: {e}"
    if mistake is not None:
        return _usage_error(mistake)
    if args.delay is not None:
        body["delay"] = args.delay
    if args.run_at is not None:
        body["runAt"] = args.run_at
    if args.all:
        return _bulk(args, "retry", body)
    return _each_id(args, lambda job_id: dict(_call_api(args, "POST", f"/job/{job_id}/retry", body or None)))


def jobs_delete(args: argparse.Namespace) -> int:
    mistake = _check_ids_or_all(args, "delete")
    if mistake is None and args.all and args.state is None:
        mistake = f"jobs delete --all: give --state, one of {', '.join(FINISHED_STATES)}"
    if mistake is not None:
        return _usage_error(mistake)
    if args.all:
        return _bulk(args, "delete")

    def delete_one(job_id: str) -> dict[str, Any]:
        job = _call_api(args, "GET", f"/job/{job_id}")
        if job["state"] not in FINISHED_STATES:
            print(f"redisq: {job_id} has not finished ({job['state']}): `redisq jobs cancel` it first",
                  file=sys.stderr)
            raise ApiCallFailed()
        answer = _call_api(args, "POST", "/jobs/delete", {"worker": job["worker"], "state": job["state"],
                                                          "ids": [job_id]})
        for skipped in answer.get("skipped") or ():
            print(f"redisq: {job_id} was not deleted: {skipped.get('reason')}", file=sys.stderr)
            raise ApiCallFailed()
        return dict(job)

    return _each_id(args, delete_one)


def jobs_cancel(args: argparse.Namespace) -> int:
    return _each_id(args, lambda job_id: dict(_call_api(args, "DELETE", f"/job/{job_id}")))


@_api_command
def jobs(args: argparse.Namespace) -> int:
    """``redisq jobs list|show|retry|delete|cancel``: operators' view of the jobs."""
    command: Callable[[argparse.Namespace], int] = args.jobs_func
    return command(args)


@_api_command
def enqueue(args: argparse.Namespace) -> int:
    """``redisq enqueue WORKER [FIELDS]``: POST /job with the fields (a JSON object) and the flags."""
    try:
        body = json.loads(args.fields) if args.fields is not None else {}
    except ValueError as e:
        return _usage_error(f"enqueue: the job's fields are not JSON: {e}")
    if not isinstance(body, dict):
        return _usage_error('enqueue: the job\'s fields must be a JSON object, e.g. \'{"args": {"to": "ada"}}\'')
    if body.get("worker", args.worker) != args.worker:
        return _usage_error(f"enqueue: the fields name worker {body['worker']!r}, the command {args.worker!r}")
    for name, value in (("delay", args.delay), ("id", args.id), ("runAt", args.run_at), ("throttleKey", args.key)):
        if value is not None:
            body[name] = value
    answer = _call_api(args, "POST", "/job", {**body, "worker": args.worker})
    if args.json:
        _print_json(answer)
    elif "cron" in answer:
        _print_schedules([answer])
    else:
        _print_jobs([answer])
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


def _processes(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number or auto, got {text!r}")
    return int(text)


def _positive_int(most: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < 1 or (most is not None and int(text) > most):
            raise argparse.ArgumentTypeError(f"must be a whole number from 1{f' to {most}' if most else ''}, "
                                             f"got {text!r}")
        return int(text)
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


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
    p.add_argument("--processes", type=_processes, metavar="N|auto",
                   help="coordinator processes on the port, sharing its Redis (default: the config's processes, "
                        "else 1; auto = one per CPU)")
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

    p = commands.add_parser("schedules", help="list the cron schedules, or pause, resume or delete one "
                                              "(asks a running coordinator)")
    api_options(p)
    p.add_argument("--worker", help="only this worker's schedules")
    actions = p.add_subparsers(dest="action")
    for verb, what in (("delete", "delete a schedule (the jobs it created stay)"),
                       ("pause", "pause a schedule: it does not tick until resumed"),
                       ("resume", "resume a schedule from its next fire time after now")):
        a = actions.add_parser(verb, help=what)
        api_options(a, nested=True)
        a.add_argument("id", help="the schedule's id, <worker>:<schedule>")
    p.set_defaults(func=schedules)

    p = commands.add_parser("jobs", help="list, show, retry, delete or cancel jobs (asks a running coordinator)",
                            description="Without --worker, list, retry --all and delete --all do each worker in "
                                        "turn (--json then prints an object keyed by worker).")
    api_options(p)
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="the jobs of a worker in a state: redisq jobs list --worker W --state dead")
    api_options(a, nested=True)
    a.add_argument("--worker", help="the worker (default: every worker)")
    a.add_argument("--state", required=True, choices=JOB_STATES)
    a.add_argument("--key", help="only the jobs of this throttle key")
    a.add_argument("--limit", type=_positive_int(MAX_PAGE), default=100,
                   help=f"jobs a page, 1 to {MAX_PAGE} (default 100)")
    a.add_argument("--all", action="store_true", help="every page, not only the first")
    a.add_argument("--cursor", help="start at this page (the cursor a listing named)")
    a.set_defaults(jobs_func=jobs_list)
    a = actions.add_parser("show", help="a job and its attempt history")
    api_options(a, nested=True)
    a.add_argument("id")
    a.set_defaults(jobs_func=jobs_show)
    a = actions.add_parser("retry", help="run dead or cancelled jobs again: IDs, or --worker W --state dead --all")
    api_options(a, nested=True)
    a.add_argument("ids", nargs="*", metavar="ID")
    a.add_argument("--worker", help="with --all: the worker (default: every worker)")
    a.add_argument("--state", choices=RETRY_STATES, default="dead", help="with --all (default dead)")
    a.add_argument("--all", action="store_true", help="every job of the worker in that state")
    a.add_argument("--limit", type=_positive_int(None), help="with --all: at most this many")
    a.add_argument("--args", help="new args for the jobs (JSON; default: each keeps its own)")
    a.add_argument("--delay", type=_seconds, help="run them this many seconds from now (default: now)")
    a.add_argument("--run-at", help="run them at this time (ISO 8601 or unix seconds)")
    a.set_defaults(jobs_func=jobs_retry)
    a = actions.add_parser("delete", help="delete finished jobs now: IDs, or --worker W --state S --all")
    api_options(a, nested=True)
    a.add_argument("ids", nargs="*", metavar="ID")
    a.add_argument("--worker", help="with --all: the worker (default: every worker)")
    a.add_argument("--state", choices=FINISHED_STATES, help="with --all: which finished jobs")
    a.add_argument("--all", action="store_true", help="every job of the worker in that state")
    a.add_argument("--limit", type=_positive_int(None), help="with --all: at most this many")
    a.set_defaults(jobs_func=jobs_delete)
    a = actions.add_parser("cancel", help="cancel jobs that have not finished")
    api_options(a, nested=True)
    a.add_argument("ids", nargs="+", metavar="ID")
    a.set_defaults(jobs_func=jobs_cancel)
    p.set_defaults(func=jobs)

    p = commands.add_parser("enqueue", help="enqueue a job: redisq enqueue WORKER '{\"args\": {...}}' "
                                            "(asks a running coordinator)")
    api_options(p)
    p.add_argument("worker")
    p.add_argument("fields", nargs="?", metavar="JSON",
                   help="the job's fields as POST /job takes them: args, maxAttempts, timeout, throttleKey, cost, "
                        "cron, ... (default {})")
    p.add_argument("--delay", type=_seconds, help="run it this many seconds from now")
    p.add_argument("--id", help="its id within the worker: enqueueing the same id again answers the job it made")
    p.add_argument("--run-at", help="run it at this time (ISO 8601 or unix seconds)")
    p.add_argument("--key", help="its throttle key")
    p.set_defaults(func=enqueue)

    def live_actions(p: argparse.ArgumentParser, set_help: str, pause_help: str, key_help: str = "") -> None:
        """``set NAME k=v ...``, ``pause NAME``, ``resume NAME`` (with ``--key`` given ``key_help``)."""
        api_options(p)
        actions = p.add_subparsers(dest="action")
        a = actions.add_parser("set", help=set_help)
        api_options(a, nested=True)
        a.add_argument("name")
        a.add_argument("settings", nargs="*", metavar="NAME=VALUE")
        for verb in ("pause", "resume"):
            a = actions.add_parser(verb, help=pause_help.format(verb=verb))
            api_options(a, nested=True)
            a.add_argument("name")
            if key_help:
                a.add_argument("--key", help=key_help)

    p = commands.add_parser("workers",
                            help="list workers and their live limits, or change them (asks a running coordinator)",
                            description="Without an action: list the workers. `set NAME rate=10 burst=40` changes "
                                        "live limits (rate, burst, concurrency, timeout, total_rate, total_burst; "
                                        "`none` removes one); `pause NAME` and `resume NAME` hold and release "
                                        "dispatch.")
    live_actions(p, "change live limits: redisq workers set NAME rate=10 burst=40", "{verb} a worker's dispatch")
    p.set_defaults(func=workers)

    p = commands.add_parser("limits", help="list the limits workers share, or change, pause or resume one "
                                           "(asks a running coordinator)",
                            description="Without an action: list the shared limits ([limits.NAME]). `set NAME "
                                        "rate=4 burst=39` changes live fields (rate, burst, concurrency, total_rate, "
                                        "total_burst; `none` removes one); `pause NAME` and `resume NAME` hold and "
                                        "release every job under it, `--key K` only those of one throttle key.")
    live_actions(p, "change a shared limit: redisq limits set NAME rate=4",
                 "{verb} a shared limit, or one of its throttle keys (--key)",
                 key_help="only this throttle key (a shop that uninstalled the app)")
    p.set_defaults(func=limits)

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
