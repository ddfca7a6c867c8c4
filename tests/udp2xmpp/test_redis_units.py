"""The [redis] config section and the Redis feed's decode path, without a server."""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import JSON_FEED_PORT, XML_FEED_PORT, packets
from udp2xmpp.bridge import make_feeds
from udp2xmpp.config import (
    REDIS_PASSWORD_ENV,
    ConfigError,
    RedisSettings,
    parse_config,
)
from udp2xmpp.effective import effective_toml
from udp2xmpp.source.redis import RedisFeed
from xmlrc.wire import RecentChange

BASE: dict[str, Any] = {
    "xmpp": {"jid": "rcbot@localhost", "password": "pw"},
    "rooms": {"service": "conference.localhost"},
}


def _redis(**keys: Any) -> RedisSettings:
    config = parse_config({**BASE, "redis": keys})
    assert config.redis is not None
    return config.redis


def test_no_redis_section_means_no_redis_feed() -> None:
    config = parse_config(BASE)
    assert config.redis is None
    assert make_feeds(config) == []


def test_redis_section_defaults_come_from_the_dataclass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REDIS_PASSWORD_ENV, raising=False)
    settings = _redis(channels=["rc"])
    assert settings == RedisSettings(channels=("rc",))
    assert settings.url == "redis://127.0.0.1:6379/0"
    assert settings.password is None and settings.username is None


def test_redis_section_reads_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    config = parse_config(
        {
            **BASE,
            "redis": {
                "url": "rediss://redis.example.org:6380/2",
                "channels": ["rc", "rc", "enwiki.rc"],
                "patterns": ["*.rc"],
                "username": "bridge",
                "password": "s3cret",
                "ca_file": "ca.pem",
            },
        },
        base_dir=tmp_path,
    )
    assert config.redis == RedisSettings(
        url="rediss://redis.example.org:6380/2",
        channels=("rc", "enwiki.rc"),  # duplicates once
        patterns=("*.rc",),
        username="bridge",
        password="s3cret",
        ca_file=str(ca.resolve()),
    )
    assert "s3cret" not in repr(config.redis)
    (feed,) = make_feeds(config)
    assert isinstance(feed, RedisFeed)
    assert feed.name == "redis"


def test_redis_password_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    config = parse_config(
        {**BASE, "redis": {"channels": ["rc"], "password_file": "pw"}}, base_dir=tmp_path
    )
    assert config.redis is not None and config.redis.password == "from-file"
    monkeypatch.setenv("MY_REDIS_PW", "from-named-env")
    assert _redis(channels=["rc"], password_env="MY_REDIS_PW").password == "from-named-env"
    monkeypatch.setenv(REDIS_PASSWORD_ENV, "from-default-env")
    assert _redis(channels=["rc"]).password == "from-default-env"
    monkeypatch.delenv("MY_REDIS_PW")
    with pytest.raises(ConfigError, match=r"^redis\.password_env: the variable MY_REDIS_PW"):
        _redis(channels=["rc"], password_env="MY_REDIS_PW")
    with pytest.raises(ConfigError, match=r"^redis\.password_file: give only one"):
        _redis(channels=["rc"], password="a", password_file="pw")
    with pytest.raises(ConfigError, match=r"^redis\.password_file: .*missing"):
        parse_config(
            {**BASE, "redis": {"channels": ["rc"], "password_file": "missing"}},
            base_dir=tmp_path,
        )


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, r"redis\.channels: give at least one channel"),
        ({"channels": "rc"}, r"redis\.channels: a list of names"),
        ({"channels": [""]}, r"redis\.channels: a list of names"),
        ({"channels": ["rc"], "patterns": [1]}, r"redis\.patterns: a list of names"),
        ({"channels": ["rc"], "url": "http://x:1/0"}, r"redis\.url: redis://host"),
        ({"channels": ["rc"], "url": "redis://"}, r"redis\.url: redis://host"),
        ({"channels": ["rc"], "url": "redis://h:1/rc"}, r"redis\.url: the path is a database"),
        ({"channels": ["rc"], "url": "redis://:pw@h:1/0"}, r"redis\.url: no credentials"),
        ({"channels": ["rc"], "ca_file": "ca.pem"}, r"redis\.ca_file: only with a rediss://"),
        (
            {"channels": ["rc"], "url": "rediss://h:1/0", "ca_file": "nope.pem"},
            r"redis\.ca_file: no such file",
        ),
        ({"channels": ["rc"], "username": 3}, r"redis\.username: must be a string"),
        ({"channels": ["rc"], "db": 3}, r"redis\.db: unknown key"),
    ],
)
def test_redis_config_errors_name_the_key(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message):
        parse_config({**BASE, "redis": keys})


def test_a_redis_section_lets_udp_listen_be_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REDIS_PASSWORD_ENV, raising=False)
    config = parse_config({**BASE, "udp": {"listen": []}, "redis": {"channels": ["rc"]}})
    assert config.udp.listen == ()
    with pytest.raises(ConfigError, match=r"^udp\.listen: needs at least one address"):
        parse_config({**BASE, "udp": {"listen": []}})


def test_the_effective_config_shows_redis_and_reads_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(REDIS_PASSWORD_ENV, raising=False)
    config = parse_config(
        {**BASE, "redis": {"channels": ["rc"], "patterns": ["*.rc"], "password": "s3cret"}}
    )
    text = effective_toml(config)
    assert "[redis]" in text and "s3cret" not in text
    again = parse_config(tomllib.loads(text))
    assert again.redis is not None and config.redis is not None
    assert again.redis.password == "***"  # secrets are masked
    assert again.redis.channels == config.redis.channels == ("rc",)
    assert again.redis.patterns == ("*.rc",)
    assert again.redis.url == config.redis.url


class _Intake:
    """Stands in for Bridge.accept: records what it is given, refuses on demand."""

    def __init__(self, refuse: bool = False) -> None:
        self.got: list[tuple[RecentChange, str]] = []
        self.refuse = refuse

    def __call__(self, change: RecentChange, origin: str) -> bool:
        self.got.append((change, origin))
        return not self.refuse


async def _feed(intake: _Intake) -> RedisFeed:
    # Never connects: start() only schedules the reader, stopped before it runs.
    feed = RedisFeed(RedisSettings(url="redis://127.0.0.1:1/0", channels=("rc",)))
    await feed.start(intake)
    await feed.stop()
    return feed


async def test_the_feed_decodes_mediawiki_json_and_xml_messages() -> None:
    intake = _Intake()
    feed = await _feed(intake)
    json_message, xml_message = packets(JSON_FEED_PORT)[0], packets(XML_FEED_PORT)[0]
    assert feed.on_message(b"rc", json_message)
    assert feed.on_message(b"testwiki.rc", xml_message)
    (first, origin1), (second, origin2) = intake.got
    assert (origin1, origin2) == ("redis:rc", "redis:testwiki.rc")
    assert first.wiki == second.wiki == "testwiki"
    assert first.title == second.title == "Sandbox1795300262"
    assert first.rcid == second.rcid == 13
    assert feed.stats.received == 2 and feed.stats.accepted == 2
    assert not feed.stats.rejected


async def test_bad_messages_are_counted_by_reason_and_logged_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    intake = _Intake()
    feed = await _feed(intake)
    caplog.set_level(logging.WARNING, logger="udp2xmpp.source.redis")
    for _ in range(30):
        assert not feed.on_message(b"rc", b"{not json")
    assert not feed.on_message(b"rc", b"")
    assert not feed.on_message(b"rc", b"x" * (feed.max_message + 1))
    assert not feed.on_message(b"rc", b"<html/>")
    assert intake.got == []
    assert feed.stats.received == 33
    assert feed.stats.rejected == {
        "bad_json": 30,
        "empty": 1,
        "too_large": 1,
        "unknown_format": 1,
    }
    dropped = [r for r in caplog.records if "dropped a message from redis:rc" in r.message]
    assert len(dropped) == 10  # RateLimitedLog's burst: a flood does not flood the log


async def test_a_change_the_intake_refuses_is_counted_as_refused() -> None:
    intake = _Intake(refuse=True)
    feed = await _feed(intake)
    assert not feed.on_message(b"\xffbad-channel", packets(JSON_FEED_PORT)[1])
    assert feed.stats.refused == 1 and feed.stats.accepted == 0
    assert intake.got[0][1] == "redis:\ufffdbad-channel"


async def test_health_and_metrics_of_a_feed_that_is_not_connected() -> None:
    feed = await _feed(_Intake())
    feed.on_message(b"rc", b"{")
    ok, details = feed.health()
    assert ok is False
    assert details == {
        "connected": False,
        "server": "redis://127.0.0.1:1",
        "channels": ["rc"],
        "patterns": [],
        "reconnects": 0,
    }
    metrics = {m.name: m for m in feed.collect_metrics()}
    assert metrics["udp2xmpp_redis_connected"].samples[0].value == 0
    assert metrics["udp2xmpp_redis_messages_received"].samples[0].value == 1
    (rejected,) = metrics["udp2xmpp_redis_messages_rejected"].samples
    assert rejected.labels == {"reason": "bad_json"} and rejected.value == 1
    assert metrics["udp2xmpp_redis_reconnects"].samples[0].value == 0


def test_the_example_bridge_toml_has_a_commented_redis_block_with_every_key(
    tmp_path: Path,
) -> None:
    text = (Path(__file__).parents[2] / "examples" / "bridge.toml").read_text()
    block = text[text.index("# [redis]") :]
    uncommented = "\n".join(
        line[2:] for line in block.splitlines() if re.match(r"# (\[redis\]|[a-z_]+ = )", line)
    )
    section = tomllib.loads(uncommented)["redis"]
    # The example's files do not exist here, and its ca_file needs a rediss:// url.
    (tmp_path / "pw").write_text("pw")
    (tmp_path / "ca.pem").write_text("ca")
    section.update(url="rediss://127.0.0.1:6380/0", password_file="pw", ca_file="ca.pem")
    config = parse_config({**BASE, "redis": section}, base_dir=tmp_path)
    assert config.redis is not None and config.redis.channels == ("rc",)
    wanted = {
        line.lstrip("# ").split(" = ")[0]
        for line in effective_toml(config).split("\n[redis]\n")[1].split("\n[")[0].splitlines()
        if " = " in line
    } - {"password"}  # the example names it as password_file
    given = {line.split(" = ")[0] for line in uncommented.splitlines() if " = " in line}
    assert wanted <= given, wanted - given
