"""Settings: environment at the edges, explicit arguments win, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import ConfigurationError, Settings


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
