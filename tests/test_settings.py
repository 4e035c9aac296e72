"""Settings: environment at the edges, explicit arguments win, clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from taskloom import ConfigurationError, Settings


def test_redis_url_falls_back_to_redis_url_and_explicit_wins() -> None:
    assert Settings.from_env({"REDIS_URL": "redis://a"}).redis_url == "redis://a"
    env = {"TASKLOOM_REDIS_URL": "redis://b", "REDIS_URL": "redis://a"}
    assert Settings.from_env(env).redis_url == "redis://b"
    assert Settings.from_env(env, redis_url="redis://c").redis_url == "redis://c"
    assert Settings.from_env({}).redis_url is None


def test_data_dir_defaults_to_a_per_user_directory() -> None:
    assert Settings.from_env({"XDG_DATA_HOME": "/x"}).data_dir == Path("/x/taskloom")
    assert Settings.from_env({"TASKLOOM_DATA_DIR": "/d"}).data_dir == Path("/d")


def test_numbers_are_parsed_and_validated() -> None:
    s = Settings.from_env({"TASKLOOM_CONCURRENCY": "7", "TASKLOOM_LEASE_TTL": "1.5"})
    assert (s.concurrency, s.lease_ttl) == (7, 1.5)
    with pytest.raises(ConfigurationError, match=r"concurrency.*TASKLOOM_"):
        Settings.from_env({"TASKLOOM_CONCURRENCY": "lots"})
    with pytest.raises(ConfigurationError, match="key_prefix"):
        Settings.from_env({}, key_prefix="a{b}")


def test_the_embedded_store_settings_take_ages_and_booleans() -> None:
    default = Settings.from_env({})
    assert (default.embedded_keep, default.embedded_idle) == (None, 1800.0)
    s = Settings.from_env({"TASKLOOM_EMBEDDED_IDLE": "2h", "TASKLOOM_EMBEDDED_KEEP": "false"})
    assert (s.embedded_keep, s.embedded_idle) == (False, 7200.0)
    assert Settings.from_env({"TASKLOOM_EMBEDDED_IDLE": "0"}).embedded_idle == 0
    assert Settings.from_env({"TASKLOOM_EMBEDDED_IDLE": "90"}).embedded_idle == 90
    with pytest.raises(ConfigurationError, match=r"embedded_idle.*30m"):
        Settings.from_env({"TASKLOOM_EMBEDDED_IDLE": "soon"})
    with pytest.raises(ConfigurationError, match="embedded_idle"):
        Settings.from_env({}, embedded_idle=-1)


def test_rate_limits_and_prices_come_from_the_environment(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('["local:llama"]\ninput = 0\noutput = 0\n')
    s = Settings.from_env(
        {
            "TASKLOOM_RATE_LIMITS": '{"openai:*": {"rpm": 5000, "tpm": null}}',
            "TASKLOOM_PRICES": str(prices),
        }
    )
    assert s.rate_limits == {"openai:*": {"rpm": 5000, "tpm": None}}
    assert s.prices == prices
    assert Settings.from_env({}).rate_limits == {}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("{openai: 5}", "must be JSON"),
        ('{"openai:*": {"rps": 5}}', "only rpm and tpm"),
        ('{"openai:*": {"rpm": "many"}}', "rate_limits"),
        ('{"openai:*": {"tpm": 0}}', "whole number >= 1"),
    ],
)
def test_bad_rate_limits_say_what_to_fix(value: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as caught:
        Settings.from_env({"TASKLOOM_RATE_LIMITS": value})
    assert "TASKLOOM_" in str(caught.value)


def test_the_readme_documents_every_setting() -> None:
    from pathlib import Path

    from taskloom.settings import _ENV

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [v for names in _ENV.values() for v in names if f"`{v}`" not in readme]
    assert missing == []


def test_text_is_read_as_each_field_type_as_the_environment_gives_it() -> None:
    s = Settings(
        redis_cluster="yes",
        embedded_keep="0",
        concurrency="8",
        prefetch=" 12 ",
        queue_partitions="4.0",
        retention="90.5",
        prices="/p/prices.toml",
        trusted_hosts="A.example.com, *.b.test",
        webhooks=["https://h.test/a"],
        rate_limits={"openai:*": {"rpm": "5000", "tpm": None}},
    )
    assert (s.redis_cluster, s.embedded_keep) == (True, False)
    assert (s.concurrency, s.prefetch, s.queue_partitions) == (8, 12, 4)
    assert s.retention == 90.5 and isinstance(s.retention, float)
    assert s.prices == Path("/p/prices.toml")
    assert s.trusted_hosts == ["a.example.com", "*.b.test"]
    assert s.rate_limits == {"openai:*": {"rpm": 5000, "tpm": None}}
    assert s == Settings(**dataclasses.asdict(s))  # what it keeps reads back the same


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"concurrency": 0}, r"concurrency: give a whole number from 1 to 10000 \(got 0\)"),
        ({"concurrency": 2.5}, "concurrency: give a whole number"),
        ({"concurrency": True}, "concurrency: give a whole number"),
        ({"lease_ttl": "nan"}, "lease_ttl: give a number above 0.05"),
        ({"lease_ttl": 0.05}, "lease_ttl: give a number above 0.05"),
        ({"redis_cluster": "maybe"}, "redis_cluster: give true or false"),
        ({"durability": "disk"}, "durability: give 'ack' or 'fsync'"),
        ({"metrics_token": "short"}, "metrics_token: give at least 32 characters"),
        ({"webhook_secret": "s" * 31}, "has 31 characters; use at least 32"),
        ({"trusted_hosts": "https://a.test"}, "give a host name"),
        ({"data_dir": 7}, "data_dir: give a file or directory path"),
    ],
)
def test_a_bad_value_given_in_python_is_a_configuration_error_that_says_what_to_give(
    given: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):  # taskloom's root, not pydantic's
        Settings(**given)  # type: ignore[arg-type]


def test_every_problem_is_said_at_once() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"TASKLOOM_CONCURRENCY": "0", "TASKLOOM_QUEUE": "a b"})
    assert "concurrency:" in str(caught.value) and "queue:" in str(caught.value)


def test_settings_are_immutable_and_derived_with_replace_which_checks_again() -> None:
    s = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.concurrency = 4  # type: ignore[misc]
    assert dataclasses.replace(s, concurrency="4").concurrency == 4
    with pytest.raises(ConfigurationError, match="concurrency"):
        dataclasses.replace(s, concurrency=-1)
    with pytest.raises(TypeError, match="colour"):  # an unknown setting is no setting
        Settings(colour="blue")  # type: ignore[call-arg]


def test_each_field_has_its_check_and_its_variable() -> None:
    from taskloom.settings import _CHECKS, _ENV

    names = [f.name for f in dataclasses.fields(Settings)]
    assert names == list(_CHECKS)
    assert set(_ENV) == set(names)
