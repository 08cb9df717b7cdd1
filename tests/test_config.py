"""Settings from TOML and the environment; every mistake names the file and the key."""

from __future__ import annotations

import os
import tomllib

import pytest

from redisq.config import Backoff, Config, ConfigError, Retention, WorkerConfig, load_config, parse_config

EXAMPLE = """
redis_url = "redis://127.0.0.1:6379/0"
public_url = "http://127.0.0.1:7575/"
secret = "s3cret"
[workers.send-email]
url = "http://127.0.0.1:9000/send-email"
rate = 2.0
burst = 40
concurrency = 10
timeout = 30
max_attempts = 5
backoff = { initial = 1.0, factor = 2.0, max = 3600.0, jitter = true }
retention = { succeeded = 3600, dead = 604800 }

[workers.sync-shop]
url = "https://shop.example.com/sync"
"""


def parse(text: str, source: str = "cfg.toml") -> Config:
    return parse_config(tomllib.loads(text), source)


def test_without_public_url_the_receipt_url_follows_the_port_it_serves_on():
    config = parse('port = 8080\n').with_overrides(port=9090)
    assert config.public_url is None and config.base_url == "http://127.0.0.1:9090"
    assert parse('host = "0.0.0.0"\n').base_url == "http://127.0.0.1:7575"
    assert parse('public_url = "https://redisq.example.com/"\n').base_url == "https://redisq.example.com"


def test_parse_the_full_example():
    config = parse(EXAMPLE)
    assert (config.redis_url, config.public_url, config.secret) == (
        "redis://127.0.0.1:6379/0", "http://127.0.0.1:7575", "s3cret")
    assert config.workers["send-email"] == WorkerConfig(
        name="send-email", url="http://127.0.0.1:9000/send-email", rate=2.0, burst=40.0, concurrency=10,
        timeout_s=30.0, max_attempts=5, backoff=Backoff(1.0, 2.0, 3600.0, True),
        retention=Retention(succeeded_s=3600.0, dead_s=604800.0, cancelled_s=604800.0),
    )
    assert config.workers["send-email"].bucket_size == 40.0
    # A worker with only a url gets the defaults: no throttling at all.
    assert config.workers["sync-shop"] == WorkerConfig(name="sync-shop", url="https://shop.example.com/sync")
    assert config.workers["sync-shop"].bucket_size is None


def test_permanent_statuses_default_to_400_410_422_and_a_worker_may_list_its_own():
    config = parse('[workers.a]\nurl = "http://x"\n[workers.b]\nurl = "http://x"\npermanent_statuses = [404, 400]\n'
                   '[workers.c]\nurl = "http://x"\npermanent_statuses = []\n')
    assert config.workers["a"].permanent_statuses == {400, 410, 422}
    assert config.workers["b"].permanent_statuses == {400, 404}
    assert config.workers["c"].permanent_statuses == frozenset()  # nothing is permanent by its status


def test_defaults_without_a_file():
    config = parse("")
    assert config == Config() and config.workers == {}


def test_on_dead_is_a_worker_s_dead_letter_url_and_absent_by_default():
    config = parse('[workers.a]\nurl = "http://x/a"\non_dead = "https://ops.example.com/dead"\n'
                   '[workers.b]\nurl = "http://x/b"\n')
    assert config.workers["a"].on_dead == "https://ops.example.com/dead"
    assert config.workers["b"].on_dead is None


def test_burst_defaults_to_the_rate_but_at_least_one():
    config = parse('[workers.a]\nurl = "http://x/a"\nrate = 5\n[workers.b]\nurl = "http://x/b"\nrate = 0.5\n')
    assert config.workers["a"].bucket_size == 5.0 and config.workers["b"].bucket_size == 1.0


def test_cancelled_retention_defaults_to_dead_retention():
    config = parse('[workers.a]\nurl = "http://x/a"\nretention = { dead = 60 }\n')
    assert config.workers["a"].retention == Retention(succeeded_s=3600.0, dead_s=60.0, cancelled_s=60.0)


@pytest.mark.parametrize("text, key, words", [
    ('[workers.send-email]\nurl = "http://x"\nrate = 0\n', "workers.send-email.rate", "must be a number > 0"),
    ('[workers.send-email]\nurl = "http://x"\nrate = "fast"\n', "workers.send-email.rate", "must be a number"),
    ('[workers.send-email]\nurl = "http://x"\nrate = true\n', "workers.send-email.rate", "must be a number"),
    ('[workers.send-email]\nurl = "http://x"\nrate = 2\nburst = 0.5\n', "workers.send-email.burst", ">= 1"),
    ('[workers.send-email]\nurl = "http://x"\nburst = 40\n', "workers.send-email.burst", "needs a rate"),
    ('[workers.send-email]\nurl = "http://x"\nconcurrency = 0\n', "workers.send-email.concurrency", "at least 1"),
    ('[workers.send-email]\nurl = "http://x"\nconcurrency = 2.5\n', "workers.send-email.concurrency", "whole number"),
    ('[workers.send-email]\nurl = "http://x"\ntimeout = -1\n', "workers.send-email.timeout", "> 0"),
    ('[workers.send-email]\nurl = "http://x"\nmax_attempts = 0\n', "workers.send-email.max_attempts", "at least 1"),
    ('[workers.send-email]\nurl = "http://x"\nrat = 2\n', "workers.send-email.rat", "unknown setting"),
    ('[workers.send-email]\nrate = 2\n', "workers.send-email.url", "is required"),
    ('[workers.send-email]\nurl = "ftp://x"\n', "workers.send-email.url", "http:// or https://"),
    ('[workers.send-email]\nurl = "http://x"\nbackoff = { factor = 0.5 }\n',
     "workers.send-email.backoff.factor", ">= 1"),
    ('[workers.send-email]\nurl = "http://x"\nbackoff = { jitter = "yes" }\n',
     "workers.send-email.backoff.jitter", "true or false"),
    ('[workers.send-email]\nurl = "http://x"\nbackoff = { initial = -1 }\n',
     "workers.send-email.backoff.initial", ">= 0"),
    ('[workers.send-email]\nurl = "http://x"\nbackoff = 5\n', "workers.send-email.backoff", "must be a table"),
    ('[workers.send-email]\nurl = "http://x"\nretention = { forever = 1 }\n',
     "workers.send-email.retention.forever", "unknown setting"),
    ('[workers.send-email]\nurl = "http://x"\nretention = { dead = -1 }\n',
     "workers.send-email.retention.dead", ">= 0"),
    ('[workers.send-email]\nurl = "http://x"\npermanent_statuses = 404\n',
     "workers.send-email.permanent_statuses", "must be a list of HTTP statuses from 400 to 599"),
    ('[workers.send-email]\nurl = "http://x"\npermanent_statuses = [400, 200]\n',
     "workers.send-email.permanent_statuses", "got [400, 200]"),
    ('[workers.send-email]\nurl = "http://x"\npermanent_statuses = ["404"]\n',
     "workers.send-email.permanent_statuses", "from 400 to 599"),
    ('[workers.send-email]\nurl = "http://x"\npermanent_statuses = [true]\n',
     "workers.send-email.permanent_statuses", "from 400 to 599"),
    ('[workers.send-email]\nurl = "http://x"\non_dead = "ftp://x"\n', "workers.send-email.on_dead",
     "must be an http:// or https:// URL, got 'ftp://x'"),
    ('[workers.send-email]\nurl = "http://x"\non_dead = 5\n', "workers.send-email.on_dead", "must be a string"),
    ('workers = 3\n', "workers", "must be a table"),
    ('[workers]\nsend-email = 3\n', "workers.send-email", "must be a table"),
    ('colour = "blue"\n', "colour", "unknown setting"),
    ('port = "80"\n', "port", "whole number"),
    ('public_url = "127.0.0.1:7575"\n', "public_url", "http:// or https://"),
    ('http_client = "requests"\n', "http_client", "'aiohttp' or 'httpx'"),
    ('processes = 0\n', "processes", 'a whole number from 1 to 256 or "auto", got 0'),
    ('processes = "all"\n', "processes", 'a whole number from 1 to 256 or "auto", got \'all\''),
    ('redis_url = "localhost:6379"\n', "redis_url", "redis://, rediss:// or unix://"),
])
def test_errors_name_the_file_and_the_key(text, key, words):
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith(f"cfg.toml: {key}: "), message
    assert words in message


@pytest.mark.parametrize("name", ["Send-Email", "send email", "-send", "_x", "x" * 65, "send.email", "é"])
def test_bad_worker_names_are_rejected(name):
    with pytest.raises(ConfigError) as caught:
        parse_config({"workers": {name: {"url": "http://x"}}}, "cfg.toml")
    assert str(caught.value).startswith(f"cfg.toml: workers.{name}: worker names are ")


def test_a_worker_name_with_a_trailing_newline_is_rejected():
    with pytest.raises(ConfigError):
        parse('[workers."send-email\\n"]\nurl = "http://x"\n')


def test_good_worker_names_are_accepted():
    names = ["a", "0", "send-email", "shop_sync-2", "x" * 64]
    config = parse_config({"workers": {n: {"url": "http://x"} for n in names}})
    assert list(config.workers) == names


def test_load_config_reads_the_file_and_the_environment_wins(tmp_path):
    path = tmp_path / "redisq.toml"
    path.write_text(EXAMPLE)
    config = load_config(str(path), environ={})
    assert config.redis_url == "redis://127.0.0.1:6379/0" and config.secret == "s3cret"
    assert set(config.workers) == {"send-email", "sync-shop"}

    env = {"REDISQ_REDIS_URL": "redis://10.0.0.5:6380/2", "REDISQ_SECRET": "from-env"}
    config = load_config(str(path), environ=env)
    assert (config.redis_url, config.secret) == ("redis://10.0.0.5:6380/2", "from-env")
    assert config.workers["send-email"].rate == 2.0  # the rest still comes from the file

    # REDISQ_CONFIG names the file; empty variables do not override.
    config = load_config(environ={"REDISQ_CONFIG": str(path), "REDISQ_SECRET": ""})
    assert config.secret == "s3cret" and "send-email" in config.workers
    assert load_config(environ={"REDISQ_SECRET": "only-env"}) == Config(secret="only-env")


def test_load_config_names_the_file_it_cannot_read(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"missing\.toml: file not found"):
        load_config(str(missing), environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("rate = = 2\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(str(broken), environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text('[workers.send-email]\nurl = "http://x"\nrate = -2\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(bad), environ={})
    assert str(caught.value).startswith(f"{bad}: workers.send-email.rate: ")


def test_a_bad_redis_url_in_the_environment_is_named():
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"REDISQ_REDIS_URL": "127.0.0.1:6379"})
    assert str(caught.value).startswith("environment: REDISQ_REDIS_URL: must be a redis://")


def test_redis_cluster_comes_from_the_file_or_the_environment_and_else_is_asked_at_start(tmp_path):
    assert parse_config({}).redis_cluster is None  # serve asks the node (INFO cluster)
    assert parse_config({"redis_cluster": True}).redis_cluster is True
    assert parse_config({"redis_cluster": False}).redis_cluster is False
    with pytest.raises(ConfigError, match=r"^redisq\.toml: redis_cluster: must be true or false"):
        parse_config({"redis_cluster": "yes"}, "redisq.toml")
    path = tmp_path / "redisq.toml"
    path.write_text('redis_url = "redis://10.0.0.5:7000"\nredis_cluster = false\n')
    assert load_config(str(path), environ={"REDISQ_REDIS_CLUSTER": "true"}).redis_cluster is True
    assert load_config(str(path), environ={"REDISQ_REDIS_CLUSTER": ""}).redis_cluster is False
    with pytest.raises(ConfigError, match="a Redis Cluster is reached over TCP"):
        load_config(None, environ={"REDISQ_REDIS_URL": "unix:///run/redis.sock", "REDISQ_REDIS_CLUSTER": "1"})


def test_signing_keys_and_api_tokens_come_from_the_file_and_the_environment():
    config = parse_config({"signing_keys": ["new", "old"], "api_tokens": ["t1"]}, "redisq.toml")
    assert config.signing_keys == ("new", "old") and config.api_tokens == ("t1",)
    assert parse_config({}).signing_keys == () and parse_config({}).api_tokens == ()
    env = {"REDISQ_SIGNING_KEYS": "k2, k1", "REDISQ_API_TOKENS": "a,,b "}
    from_env = load_config(None, environ=env)
    assert from_env.signing_keys == ("k2", "k1") and from_env.api_tokens == ("a", "b")


@pytest.mark.parametrize("value", ["one", [""], [1], ["ok", "  "]])
def test_signing_keys_must_be_a_list_of_strings(value):
    with pytest.raises(ConfigError, match="redisq.toml: signing_keys: must be a list of non-empty strings"):
        parse_config({"signing_keys": value}, "redisq.toml")


def test_send_window_defaults_to_a_quarter_second_and_refuses_what_is_not_a_window():
    assert parse("").send_window_s == 0.25
    assert parse("send_window = 0.5").send_window_s == 0.5
    for bad, message in (("0", "must be a number > 0"), ("-1", "must be a number > 0"), ('"x"', "must be a number"),
                         ("61", "must be at most 60 seconds")):
        with pytest.raises(ConfigError, match=f"cfg.toml: send_window: {message}"):
            parse(f"send_window = {bad}")


def test_api_tokens_may_be_a_table_of_named_tokens():
    config = parse_config({"api_tokens": {"ops": "ops-secret", "ci": "ci-secret"}}, "redisq.toml")
    assert config.api_tokens == ("ops-secret", "ci-secret")
    assert config.api_token_names == {"ops-secret": "ops", "ci-secret": "ci"}
    assert parse_config({"api_tokens": ["plain"]}).api_token_names == {}  # the list form: unnamed
    # the environment's tokens replace the file's, and are unnamed
    with_env = load_config(None, environ={"REDISQ_API_TOKENS": "from-env"})
    assert with_env.api_tokens == ("from-env",) and with_env.api_token_names == {}


@pytest.mark.parametrize("value, message", [
    ({"ops": ""}, "redisq.toml: api_tokens.ops: must be a non-empty string (the token)"),
    ({"ops": 7}, "redisq.toml: api_tokens.ops: must be a non-empty string (the token)"),
    ({"ops": "same", "ci": "same"}, "redisq.toml: api_tokens.ci: is the same token as api_tokens.ops"),
    ("one", 'redisq.toml: api_tokens: must be a list of tokens (["..."]) or a table of named ones'),
    ([""], 'redisq.toml: api_tokens: must be a list of tokens (["..."]) or a table of named ones'),
])
def test_bad_api_tokens_are_config_errors(value, message):
    with pytest.raises(ConfigError) as caught:
        parse_config({"api_tokens": value}, "redisq.toml")
    assert str(caught.value).startswith(message)


def test_processes_auto_is_one_per_cpu():
    assert parse('processes = "auto"\n').processes == (os.cpu_count() or 1)
    assert parse('processes = 3\n').processes == 3
    assert parse("").processes == 1
