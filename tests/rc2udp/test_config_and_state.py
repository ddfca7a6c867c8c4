"""rc2udp's configuration, state file and the pure siteinfo/rcprop helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rc2udp.config import (
    ConfigError,
    PollConfig,
    Target,
    WikiConfig,
    build_config,
    load_toml,
    parse_since,
    parse_target,
)
from rc2udp.state import StateError, StateFile
from xmlrc.wire import DecodeError
from xmlrc.wire.apijson import (
    RCPROP,
    ResumePoint,
    Site,
    can_read_patrolled,
    rcprop,
    site_from_siteinfo,
)
from xmlrc_emitter import DatagramFormat

EXAMPLE = Path(__file__).parents[2] / "examples" / "rc2udp.toml"
NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_the_example_config_is_valid_and_says_what_the_defaults_are(tmp_path: Path) -> None:
    config = build_config(load_toml(EXAMPLE), base_dir=EXAMPLE.parent)
    assert [w.api for w in config.wikis] == [
        "https://en.wikipedia.org/w/api.php",
        "https://de.wikipedia.org/w/api.php",
    ]
    assert config.targets == (Target("127.0.0.1", 9390),)
    assert config.format is DatagramFormat.XMLRC
    assert config.state_file == EXAMPLE.parent / "rc2udp-state.json"
    assert (config.interval, config.lookback, config.maxlag, config.since) == (10, 10, 5, "now")
    assert config.contact == "you@example.org"
    defaults = build_config({"wiki": [{"api": "http://127.0.0.1/api.php"}]})
    for name in ("targets", "format", "prefix", "interval", "lookback", "maxlag", "since"):
        assert getattr(defaults, name) == getattr(config, name), name


def test_command_line_values_add_wikis_and_override_the_file(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    data = {
        "contact": "ops@example.org",
        "targets": ["127.0.0.1:9390"],
        "wiki": [{"api": "https://a.example/w/api.php", "login": "Bot@x", "password_file": "pw"}],
    }
    config = build_config(
        data,
        base_dir=tmp_path,
        apis=("https://b.example/w/api.php",),
        overrides={
            "targets": ["[::1]:9391", "127.0.0.1:9392"],
            "format": "mw-json",
            "maxlag": None,
        },
    )
    assert [(w.api, w.login, w.password) for w in config.wikis] == [
        ("https://a.example/w/api.php", "Bot@x", "s3cret"),
        ("https://b.example/w/api.php", None, None),
    ]
    assert config.targets == (Target("::1", 9391), Target("127.0.0.1", 9392))
    assert str(config.targets[0]) == "[::1]:9391"
    assert config.format is DatagramFormat.MW_JSON
    assert config.maxlag == 5  # None means "not given on the command line"
    assert build_config(data, base_dir=tmp_path, overrides={"maxlag": -1}).maxlag is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "no wiki"),
        ({"wiki": [{"api": "ftp://x/api.php"}]}, "wiki[0].api"),
        ({"wiki": [{"api": "http://127.0.0.1/a", "colour": 1}]}, "wiki[0]: unknown key 'colour'"),
        ({"wiki": [{"api": "http://127.0.0.1/a", "login": "B@x"}]}, "wiki[0]: login needs"),
        ({"wiki": [{"api": "http://127.0.0.1/a"}], "targets": ["nohost"]}, "targets: expected"),
        ({"wiki": [{"api": "http://127.0.0.1/a"}], "format": "yaml"}, "format: expected one of"),
        ({"wiki": [{"api": "http://127.0.0.1/a"}], "interval": 0}, "interval: expected"),
        ({"wiki": [{"api": "http://127.0.0.1/a"}], "since": "yesterday"}, "since: expected"),
        ({"wiki": [{"api": "http://127.0.0.1/a"}], "prefix": "a b"}, "prefix: no spaces"),
        ({"wiki": [{"api": "http://127.0.0.1/a"}], "color": "x"}, "unknown key 'color'"),
        ({"wiki": [{"api": "http://127.0.0.1/a"}, {"api": "http://127.0.0.1/a"}]}, "twice"),
        ({"wiki": [{"api": "https://en.wikipedia.org/w/api.php"}]}, "contact: give --contact"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(data)
    assert message in str(caught.value)


def test_a_public_wiki_needs_a_contact_a_loopback_one_does_not() -> None:
    public = {"wiki": [{"api": "https://en.wikipedia.org/w/api.php"}]}
    assert build_config(public, overrides={"contact": "me@example.org"}).contact
    assert build_config(public, overrides={"user_agent": "Tool/1 (me@example.org)"}).user_agent
    for api in ("http://127.0.0.1:8080/api.php", "http://localhost/w/api.php", "http://[::1]/a"):
        assert build_config({"wiki": [{"api": api}]}).contact is None


def test_login_from_the_command_line_needs_a_password() -> None:
    with pytest.raises(ConfigError, match="--login needs a password"):
        build_config({}, apis=("http://127.0.0.1/api.php",), login="Bot@x")


def test_since_and_targets() -> None:
    assert parse_since("now", NOW) == NOW.replace(microsecond=0)
    assert parse_since("90s", NOW) == (NOW - timedelta(seconds=90)).replace(microsecond=0)
    assert parse_since("2h", NOW) == (NOW - timedelta(hours=2)).replace(microsecond=0)
    assert parse_since("3d", NOW) == (NOW - timedelta(days=3)).replace(microsecond=0)
    assert parse_since("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ConfigError):
        parse_since("2026-01-01T00:00:00")  # no time zone: ambiguous
    assert parse_target("[::1]:9390") == Target("::1", 9390)
    for bad in ("host", "host:0", "host:99999", ":9390"):
        with pytest.raises(ConfigError):
            parse_target(bad)


def test_state_file_round_trip_and_atomic_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = StateFile(path)
    assert state.get("http://a/api.php") is None
    point = ResumePoint(NOW.replace(microsecond=0), ((5, NOW.replace(microsecond=0)),))
    state.put("http://a/api.php", "awiki", point)
    state.put("http://b/api.php", "bwiki", ResumePoint.start(NOW.replace(microsecond=0)))
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left
    again = StateFile(path)
    expected = ResumePoint(point.timestamp, point.seen, point.timestamp)  # rcstart made explicit
    assert again.get("http://a/api.php") == expected
    assert json.loads(path.read_text())["wikis"]["http://a/api.php"]["wiki"] == "awiki"
    assert StateFile(None).get("http://a/api.php") is None  # in memory only


@pytest.mark.parametrize(
    "text", ["not json", "[]", '{"version": 2, "wikis": {}}', '{"version": 1, "wikis": {"a": {}}}']
)
def test_a_damaged_state_file_is_refused_not_ignored(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(StateError):
        StateFile(path)


def test_site_from_siteinfo_describes_the_wiki_as_the_feeds_do() -> None:
    general = {
        "wikiid": "enwiki",
        "server": "//en.wikipedia.org",
        "servername": "en.wikipedia.org",
        "scriptpath": "/w",
    }
    assert site_from_siteinfo(general, "https://en.wikipedia.org/w/api.php") == Site(
        "enwiki", "https://en.wikipedia.org", "en.wikipedia.org", "/w"
    )
    local = {"wikiid": "testwiki", "server": "http://127.0.0.1:8080", "scriptpath": ""}
    assert site_from_siteinfo(local) == Site("testwiki", "http://127.0.0.1:8080", None, "/")
    with pytest.raises(DecodeError):
        site_from_siteinfo({"wikiid": "evil@wiki"})
    with pytest.raises(DecodeError):
        site_from_siteinfo([])


def test_patrolled_is_asked_only_with_the_right_to_read_it() -> None:
    assert rcprop() == RCPROP and "patrolled" in RCPROP.split("|")
    assert rcprop(patrolled=False).split("|") == [p for p in RCPROP.split("|") if p != "patrolled"]
    assert can_read_patrolled({"rights": ["read", "patrol"]})
    assert can_read_patrolled({"rights": ["patrolmarks"]})
    assert not can_read_patrolled({"rights": ["read", "edit"]})
    assert not can_read_patrolled({"anon": True})


def test_a_config_naming_only_a_wiki_is_exactly_the_dataclass_defaults() -> None:
    # build_config takes its defaults from PollConfig and Limits: the two cannot drift.
    api = "http://127.0.0.1/api.php"
    assert build_config({"wiki": [{"api": api}]}) == PollConfig(wikis=(WikiConfig(api=api),))
