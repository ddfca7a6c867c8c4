"""Pure parts: the resume state file, --since values, account settings."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rcclient.config import (
    Account,
    ConfigError,
    Trust,
    parse_since,
    resolve_account,
    resolve_trust,
)
from rcclient.state import RECENT, StateError, StateFile

ROOM = "enwiki@conference.example.org"
STAMP = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_state_round_trip_and_recent_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    state = StateFile.load(path)  # missing: empty
    assert state.position(ROOM) is None and not state.dirty
    for n in range(RECENT + 10):
        state.record(ROOM, f"id{n}", f"enwiki/{n}", STAMP)
    state.record(ROOM, None, None)  # nothing to remember
    assert state.dirty
    state.save()
    assert not state.dirty
    again = StateFile.load(path)
    assert again.position(ROOM) == f"id{RECENT + 9}"
    assert again.timestamp(ROOM) == STAMP
    assert again.recent(ROOM) == [f"enwiki/{n}" for n in range(10, RECENT + 10)]
    assert json.loads(path.read_text())["rooms"][ROOM]["timestamp"] == "2026-01-02T03:04:05Z"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary left


def test_state_write_is_atomic_rename(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = StateFile(path)
    state.record(ROOM, "a", "enwiki/1")
    state.save()
    before = os.stat(path).st_ino
    state.record(ROOM, "b", "enwiki/2")
    state.save()
    assert os.stat(path).st_ino != before  # a new file renamed over the old one
    assert StateFile.load(path).position(ROOM) == "b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid"),
        ('{"version": 2, "rooms": {}}', "expected an object with version 1"),
        ('{"version": 1, "rooms": []}', "'rooms' is not an object"),
        ('{"version": 1, "rooms": {"r": {"archive_id": 3}}}', "archive_id is not a string"),
        ('{"version": 1, "rooms": {"r": {"recent": "x"}}}', "recent is not a list"),
    ],
)
def test_a_bad_state_file_is_an_error_not_a_fresh_start(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(StateError, match=message):
        StateFile.load(path)


def test_state_that_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    state = StateFile(blocker / "state.json")  # a directory that is a file
    state.record(ROOM, "a", None)
    with pytest.raises(StateError, match="cannot write state file"):
        state.save()


def test_parse_since() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_since("10m", now) == now - timedelta(minutes=10)
    assert parse_since("1h30m", now) == now - timedelta(minutes=90)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("45s", now) == now - timedelta(seconds=45)
    assert parse_since("2026-04-30T10:00:00Z") == datetime(2026, 4, 30, 10, tzinfo=UTC)
    assert parse_since("2026-04-30T12:00:00+02:00") == datetime(2026, 4, 30, 10, tzinfo=UTC)
    assert parse_since("2026-04-30 10:00") == datetime(2026, 4, 30, 10, tzinfo=UTC)  # UTC
    for bad in ("", "10 minutes", "yesterday", "10x"):
        with pytest.raises(ConfigError, match="--since"):
            parse_since(bad, now)


def test_account_from_flags_environment_and_file(tmp_path: Path) -> None:
    config = tmp_path / "rcclient.toml"
    (tmp_path / "pw").write_text("from-file\n")
    (tmp_path / "ca.pem").write_text("")
    config.write_text(
        '[account]\njid = "file@example.org"\npassword_file = "pw"\nport = 5322\n'
        'ca_file = "ca.pem"\nhost = "filehost"\n'
    )
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    account = resolve_account(environ=env)  # the default file, found through XDG
    assert account.jid == "file@example.org" and account.password == "from-file"
    assert account.port == 5322 and account.host == "filehost"
    assert account.ca_file == str(tmp_path / "ca.pem")
    env |= {"RCCLIENT_JID": "env@example.org", "RCCLIENT_PASSWORD": "envpw"}
    account = resolve_account(environ=env)
    assert (account.jid, account.password, account.port) == ("env@example.org", "envpw", 5322)
    account = resolve_account(jid="flag@example.org", port=5999, environ=env)
    assert (account.jid, account.password, account.port) == ("flag@example.org", "envpw", 5999)


def test_account_errors(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="no account: give --jid"):
        resolve_account(environ=env)
    with pytest.raises(ConfigError, match="no password for a@b"):
        resolve_account(jid="a@b", environ=env)
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_account(config=tmp_path / "missing.toml", environ=env)
    bad = tmp_path / "bad.toml"
    bad.write_text("[account]\nport = 'x'\n")
    with pytest.raises(ConfigError, match=r"account\.port must be a number"):
        resolve_account(config=bad, environ=env)
    bad.write_text("[account]\njid = 'a@b'\nusername = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown key account\.username"):
        resolve_account(config=bad, environ=env)
    bad.write_text("[account\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_account(config=bad, environ=env)
    with pytest.raises(ConfigError, match="CA file not found"):
        resolve_account(jid="a@b", password="p", ca_file=str(tmp_path / "no.pem"), environ=env)


def test_trust_from_flags_and_the_config_file(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert resolve_trust(environ=env) == Trust("rcbot", (), True)  # no file: safe defaults
    config = tmp_path / "rcclient.toml"
    config.write_text(
        '[account]\njid = "a@b"\n[trust]\npublisher = "feedbot"\n'
        'publisher_jid = "bridge@example.org/x"\nrequire_moderated = false\n'
    )
    assert resolve_trust(environ=env) == Trust("feedbot", ("bridge@example.org/x",), False)
    assert resolve_trust(publisher="rc", publisher_jid="b@c", environ=env) == Trust(
        "rc", ("b@c",), False
    )
    config.write_text("[trust]\nrequire_moderated = true\n")
    assert resolve_trust(allow_unmoderated=True, environ=env).require_moderated is False
    assert resolve_account(jid="a@b", password="p", environ=env).jid == "a@b"  # [trust] is fine


def test_trust_publisher_jid_is_one_string_or_a_list(tmp_path: Path) -> None:
    # A bridge pair has two accounts: its readers name both, in the file or as flags.
    config = tmp_path / "rcclient.toml"
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    for value, jids in [
        ('"rcbot@example.org"', ("rcbot@example.org",)),
        ('["rcbot@example.org"]', ("rcbot@example.org",)),
        (
            '["rcbot@example.org", "rcbot2@example.org"]',
            ("rcbot@example.org", "rcbot2@example.org"),
        ),
        ('["a@b", "c@d", "a@b"]', ("a@b", "c@d")),  # the same account once
    ]:
        config.write_text(f"[trust]\npublisher_jid = {value}\n")
        assert resolve_trust(environ=env).publisher_jids == jids, value
    # --publisher-jid (repeatable: the CLI's tuple) replaces the file's list.
    flags = ("x@y", "z@y")
    assert resolve_trust(publisher_jid=flags, environ=env).publisher_jids == flags
    assert resolve_trust(publisher_jid=(), environ=env).publisher_jids == ("a@b", "c@d")
    message = r"trust\.publisher_jid must be a non-empty string or a list of non-empty strings"
    for value in ['""', "[]", '["a@b", ""]', '["a@b", 3]', '"/r"', "3", "true", '{ jid = "a@b" }']:
        config.write_text(f"[trust]\npublisher_jid = {value}\n")
        with pytest.raises(ConfigError, match=message):
            resolve_trust(environ=env)
    config.write_text("")
    for bad in [("a@b", ""), "", (" ",)]:
        with pytest.raises(ConfigError, match="--publisher-jid: give the bridge's account"):
            resolve_trust(publisher_jid=bad, environ=env)


def test_trust_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    for text, message in [
        ("[trust]\nnick = 'x'\n", r"unknown key trust\.nick"),
        ("[trust]\npublisher = ''\n", r"trust\.publisher must be a non-empty string"),
        ("[trust]\nrequire_moderated = 'no'\n", r"trust\.require_moderated must be true or false"),
        ("trust = 3\n", r"\[trust\] must be a table"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            resolve_trust(config=bad, environ=env)
    with pytest.raises(ConfigError, match="--publisher"):
        resolve_trust(publisher="", environ=env)


def test_nothing_given_means_exactly_the_dataclass_defaults(tmp_path: Path) -> None:
    # resolve_* take their defaults from Account and Trust: the two cannot drift.
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert resolve_trust(environ=env) == Trust()
    assert resolve_account(jid="a@b", password="p", environ=env) == Account("a@b", "p")


def test_the_nodes_of_a_cluster_from_the_file_or_the_flags(tmp_path: Path) -> None:
    config = tmp_path / "rcclient.toml"
    config.write_text(
        '[account]\njid = "a@b"\npassword = "p"\nservers = ["10.0.0.2:5222", "[::1]:5223"]\n'
    )
    env: dict[str, str] = {}
    account = resolve_account(config=config, environ=env)
    assert account.servers == (("10.0.0.2", 5222), ("::1", 5223))
    flagged = resolve_account(config=config, environ=env, servers=["10.0.0.9:1"])
    assert flagged.servers == (("10.0.0.9", 1),)
    with pytest.raises(ConfigError, match="--server: "):
        resolve_account(config=config, environ=env, servers=["nowhere"])
    config.write_text('[account]\njid = "a@b"\npassword = "p"\nservers = "10.0.0.2:5222"\n')
    with pytest.raises(ConfigError, match=r"account\.servers must be a list"):
        resolve_account(config=config, environ=env)
