"""Request parsing (runAt formats, enqueue bodies) and the Job record."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from redisq.config import WorkerConfig
from redisq.errors import ValidationError
from redisq.keys import JOB_SUFFIX_RE
from redisq.model import Job, JobState, iso_from_ms, parse_enqueue, parse_run_at

WORKERS = {
    "send-email": WorkerConfig(name="send-email", url="http://127.0.0.1:9000/send-email", timeout_s=30, max_attempts=5),
    "sync-shop": WorkerConfig(name="sync-shop", url="http://127.0.0.1:9000/sync-shop"),
}
TEN_AM_UTC_MS = int(datetime(2020, 1, 1, 10, tzinfo=UTC).timestamp() * 1000)


# -- runAt ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected_ms", [
    ("2020-01-01T12:00:00+02:00", TEN_AM_UTC_MS),
    ("2020-01-01T05:00:00-05:00", TEN_AM_UTC_MS),
    ("2020-01-01T10:00:00.250+00:00", TEN_AM_UTC_MS + 250),
    ("2020-01-01T10:00:00", TEN_AM_UTC_MS),        # no offset: UTC
    ("2020-01-01 10:00:00", TEN_AM_UTC_MS),
    ("2020-01-01T10:00:00Z", TEN_AM_UTC_MS),
    ("2020-01-01 10:00:00 AM", TEN_AM_UTC_MS),
    ("2020-01-01 10:00 AM", TEN_AM_UTC_MS),
    ("2020-01-01 10:00:00 PM", TEN_AM_UTC_MS + 12 * 3600_000),
    ("2020-01-01 12:00:00 AM", TEN_AM_UTC_MS - 10 * 3600_000),
    ("01/01/2020 10:00:00 AM", TEN_AM_UTC_MS),
    (TEN_AM_UTC_MS / 1000, TEN_AM_UTC_MS),          # unix seconds
    (TEN_AM_UTC_MS // 1000, TEN_AM_UTC_MS),
    (TEN_AM_UTC_MS / 1000 + 0.5, TEN_AM_UTC_MS + 500),
    (str(TEN_AM_UTC_MS // 1000), TEN_AM_UTC_MS),     # numeric string
    (" 1577872800.25 ", TEN_AM_UTC_MS + 250),
    ("9999-12-31T23:59:59.999Z", 253402300799999),  # the last millisecond there is
])
def test_parse_run_at_accepts(value, expected_ms):
    assert parse_run_at(value) == expected_ms


@pytest.mark.parametrize("value", [
    "tomorrow", "", "   ", "2020-13-01T00:00:00", "2020-01-01 25:00:00", "10:00 AM", "nan",
    None, True, False, [], {}, float("nan"), float("inf"),
])
def test_parse_run_at_rejects_garbage(value):
    with pytest.raises(ValueError):
        parse_run_at(value)


@pytest.mark.parametrize("value", ["inf", "1e400", 1e308])
def test_parse_run_at_rejects_infinite_times(value):
    with pytest.raises(ValueError):
        parse_run_at(value)


# -- enqueue bodies --------------------------------------------------------------------


def test_parse_enqueue_defaults_from_the_worker():
    r = parse_enqueue({"worker": "send-email", "args": {"to": "a@example.com"}}, WORKERS)
    # No timeout given: the job takes the worker's live timeout when it is claimed.
    assert (r.worker, r.run_at_ms, r.delay_ms, r.max_attempts, r.timeout_ms) == ("send-email", None, 0, 5, None)
    assert (r.throttle_key, r.cost) == ("", 1.0)
    assert json.loads(r.args_json) == {"to": "a@example.com"}
    assert JOB_SUFFIX_RE.match(r.suffix) and r.job_id == f"send-email:{r.suffix}"
    assert parse_enqueue({"worker": "send-email"}, WORKERS).suffix != r.suffix  # a fresh id each time
    assert parse_enqueue({"worker": "send-email"}, WORKERS).args_json == "{}"


def test_parse_enqueue_reads_every_field():
    r = parse_enqueue({"worker": "sync-shop", "args": [1, "two"], "runAt": "2020-01-01T10:00:00Z",
                       "id": "shop-42", "maxAttempts": 2, "timeout": 1.5}, WORKERS)
    assert (r.job_id, r.args_json, r.run_at_ms, r.max_attempts, r.timeout_ms) == (
        "sync-shop:shop-42", '[1,"two"]', TEN_AM_UTC_MS, 2, 1500)
    assert parse_enqueue({"worker": "sync-shop", "delay": 2.5}, WORKERS).delay_ms == 2500


@pytest.mark.parametrize("body, field, words", [
    ({"worker": "nope"}, "worker", "unknown worker 'nope'"),
    ({}, "worker", "is required"),
    ({"worker": 7}, "worker", "is required"),
    ({"worker": "send-email", "runAt": 1, "delay": 1}, "runAt", "not both"),
    ({"worker": "send-email", "runAt": "soon"}, "runAt", "'soon' is not"),
    ({"worker": "send-email", "delay": -1}, "delay", "seconds >= 0 and <= 3153600000"),
    ({"worker": "send-email", "delay": "5"}, "delay", "seconds >= 0 and <= 3153600000"),
    ({"worker": "send-email", "id": "has space"}, "id", "must be 1 to 200"),
    ({"worker": "send-email", "id": ""}, "id", "must be 1 to 200"),
    ({"worker": "send-email", "id": 12}, "id", "must be 1 to 200"),
    ({"worker": "send-email", "maxAttempts": 0}, "maxAttempts", "whole number >= 1"),
    ({"worker": "send-email", "maxAttempts": 1.5}, "maxAttempts", "whole number >= 1"),
    ({"worker": "send-email", "maxAttempts": True}, "maxAttempts", "whole number >= 1"),
    ({"worker": "send-email", "maxAttempts": "3"}, "maxAttempts", "whole number >= 1"),
    ({"worker": "send-email", "timeout": 0}, "timeout", "seconds > 0"),
    ({"worker": "send-email", "args": float("nan")}, "args", "must be JSON"),
    ({"worker": "send-email", "priority": 1}, "priority", "unknown field"),
])
def test_parse_enqueue_errors_name_the_field(body, field, words):
    with pytest.raises(ValidationError) as caught:
        parse_enqueue(body, WORKERS)
    error = caught.value
    assert error.field == field and error.index is None
    assert error.message.startswith(f"{field}: ") and words in error.message
    assert error.to_json() == {"error": error.message, "field": field}


def test_parse_enqueue_rejects_an_id_with_a_trailing_newline():
    with pytest.raises(ValidationError):
        parse_enqueue({"worker": "send-email", "id": "abc\n"}, WORKERS)


@pytest.mark.parametrize("field", ["delay", "timeout"])
def test_parse_enqueue_rejects_an_overflowing_number(field):
    with pytest.raises(ValidationError):
        parse_enqueue({"worker": "send-email", field: 1e308}, WORKERS)


def test_parse_enqueue_errors_name_the_index_in_a_batch():
    with pytest.raises(ValidationError) as caught:
        parse_enqueue({"worker": "send-email", "maxAttempts": 0}, WORKERS, index=3)
    assert (caught.value.field, caught.value.index) == ("maxAttempts", 3)
    assert caught.value.message.startswith("jobs[3].maxAttempts: ")
    assert caught.value.to_json()["index"] == 3


@pytest.mark.parametrize("body", [[], "job", 1, None])
def test_parse_enqueue_rejects_a_body_that_is_not_an_object(body):
    with pytest.raises(ValidationError) as caught:
        parse_enqueue(body, WORKERS)
    assert caught.value.field is None and caught.value.message == "body: must be a JSON object"
    with pytest.raises(ValidationError) as caught:
        parse_enqueue(body, WORKERS, index=0)
    assert caught.value.index == 0 and caught.value.message == "jobs[0]: must be a JSON object"


def test_an_unknown_worker_error_lists_the_known_ones():
    with pytest.raises(ValidationError, match=r"known: send-email, sync-shop"):
        parse_enqueue({"worker": "nope"}, WORKERS)
    with pytest.raises(ValidationError, match=r"none are configured"):
        parse_enqueue({"worker": "nope"}, {})


# -- the Job record --------------------------------------------------------------------


def test_job_from_redis_fields_and_to_json():
    fields = {b"state": b"succeeded", b"args": b'{"to":"a"}', b"run_at_ms": b"1577872800000",
              b"attempts": b"2", b"max_attempts": b"5", b"timeout_ms": b"30000",
              b"created_ms": b"1577872799000", b"result": b'{"ok":true}', b"finished_ms": b"1577872801500",
              b"last_error": b"smtp 451"}
    history = [b'{"attempt":1,"started_ms":1577872800000,"ended_ms":1577872800250,"outcome":"failed",'
               b'"status":451,"error":"smtp 451","by":"host-a:12"}']  # the success is read from the hash
    fields.update({b"started_ms": b"1577872801000", b"status": b"200", b"sent_by": b"host-b:7"})
    job = Job.from_fields("send-email", "abc", fields, history)
    assert job.state is JobState.SUCCEEDED and job.state.finished
    assert job.to_json() == {
        "id": "send-email:abc", "worker": "send-email", "state": "succeeded", "args": {"to": "a"},
        "runAt": "2020-01-01T10:00:00.000Z", "attempts": 2, "maxAttempts": 5, "lastError": "smtp 451",
        "result": {"ok": True}, "createdAt": "2020-01-01T09:59:59.000Z", "finishedAt": "2020-01-01T10:00:01.500Z",
        "throttleKey": None, "cost": 1,
        "history": [
            {"attempt": 1, "startedAt": "2020-01-01T10:00:00.000Z", "endedAt": "2020-01-01T10:00:00.250Z",
             "durationMs": 250, "outcome": "failed", "status": 451, "error": "smtp 451", "coordinator": "host-a:12"},
            {"attempt": 2, "startedAt": "2020-01-01T10:00:01.000Z", "endedAt": "2020-01-01T10:00:01.500Z",
             "durationMs": 500, "outcome": "succeeded", "status": 200, "error": None, "coordinator": "host-b:7"},
        ],
    }
    assert json.loads(job.json_text()) == job.to_json()
    # the entry as this version stores it (short keys, job_fields.HISTORY_FIELDS) reads the same
    short = [b'{"n":1,"b":1577872800000,"e":1577872800250,"o":"failed","h":451,"x":"smtp 451","by":"host-a:12"}']
    assert Job.from_fields("send-email", "abc", fields, short).to_json() == job.to_json()
    listed = Job.from_fields("send-email", "abc", fields)  # a listing's job: no history
    assert "history" not in listed.to_json() and json.loads(listed.json_text()) == listed.to_json()
    keyed = Job.from_fields("send-email", "abc", {**fields, b"throttle_key": b"shop-a", b"cost": b"12.5"})
    assert (keyed.to_json()["throttleKey"], keyed.to_json()["cost"]) == ("shop-a", 12.5)
    assert json.loads(keyed.json_text()) == keyed.to_json()


def test_finished_states():
    assert {s for s in JobState if s.finished} == {JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED}
    assert iso_from_ms(None) is None
