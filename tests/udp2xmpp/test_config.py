"""Config validation: every bad value stops startup with a message naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from udp2xmpp.config import (
    COMPONENT_PORT,
    SECRET_ENV,
    BridgeConfig,
    ConfigError,
    RoomSettings,
    UdpSettings,
    XmppSettings,
    load_config,
    parse_config,
)

BASE: dict[str, Any] = {
    "xmpp": {"jid": "rcbot@localhost", "password": "pw"},
    "udp": {"listen": "127.0.0.1:9390"},
    "rooms": {"service": "conference.localhost"},
}


def config_with(section: str, key: str, value: Any) -> dict[str, Any]:
    data = {name: dict(values) for name, values in BASE.items()}
    data.setdefault(section, {})[key] = value
    return data


def test_minimal_config_gets_documented_defaults() -> None:
    config = parse_config(BASE)
    assert config.xmpp.port == 5222 and config.xmpp.host is None and config.xmpp.verify_tls
    assert config.udp.listen == (("127.0.0.1", 9390),)
    assert config.rooms.room == "{wiki}" and config.rooms.nick == "rcbot"


def test_several_listen_addresses_and_ipv6() -> None:
    config = parse_config(config_with("udp", "listen", ["127.0.0.1:1", "[::1]:2"]))
    assert config.udp.listen == (("127.0.0.1", 1), ("::1", 2))


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("xmpp", "jid", "not a jid@", "xmpp.jid"),
        ("xmpp", "jid", "localhost", "xmpp.jid: needs a user part"),
        ("xmpp", "port", 70000, "xmpp.port"),
        ("xmpp", "port", "5222", "xmpp.port: must be an integer"),
        ("xmpp", "ca_file", "/nonexistent/ca.pem", "xmpp.ca_file: no such file"),
        ("xmpp", "colour", "blue", "xmpp.colour: unknown key"),
        ("xmpp", "servers", "127.0.0.2:5222", "xmpp.servers: expected a list"),
        ("xmpp", "servers", ["127.0.0.2"], "xmpp.servers: expected"),
        ("xmpp", "servers", ["a:1", "a:1"], "xmpp.servers: a server is listed twice"),
        ("udp", "listen", "9390", "udp.listen"),
        ("udp", "listen", "127.0.0.1:http", "udp.listen: bad port"),
        ("udp", "listen", [], "udp.listen: needs at least one address"),
        ("udp", "receive_buffer", 10, "udp.receive_buffer"),
        ("rooms", "service", "rooms@conference.localhost", "rooms.service"),
        ("rooms", "room", "static", "rooms.room: the template must contain {wiki}"),
        ("rooms", "wikis", ["ok", "bad wiki"], "rooms.wikis"),
        ("delivery", "queue_size", 0, "delivery.queue_size"),
        ("bogus", "x", 1, "bogus: unknown section"),
    ],
)
def test_bad_value_names_the_key(section: str, key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_config(config_with(section, key, value))


def test_missing_sections_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UDP2XMPP_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=r"rooms: missing section \[rooms\]"):
        parse_config({"xmpp": BASE["xmpp"]})
    with pytest.raises(ConfigError, match=r"xmpp\.password: not set"):
        parse_config({**BASE, "xmpp": {"jid": "rcbot@localhost"}})


def test_password_from_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret").write_text("from-file\n")
    data = {**BASE, "xmpp": {"jid": "rcbot@localhost", "password_file": "secret"}}
    assert parse_config(data, base_dir=tmp_path).xmpp.password == "from-file"
    monkeypatch.setenv("MY_SECRET", "from-env")
    data = {**BASE, "xmpp": {"jid": "rcbot@localhost", "password_env": "MY_SECRET"}}
    assert parse_config(data).xmpp.password == "from-env"
    both = {**BASE, "xmpp": {"jid": "rcbot@localhost", "password": "a", "password_file": "b"}}
    with pytest.raises(ConfigError, match="give only one"):
        parse_config(both)


def test_load_config_reports_toml_errors(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text("[xmpp\njid = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file"):
        load_config(tmp_path / "missing.toml")


def test_an_empty_ish_config_is_exactly_the_dataclass_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The parse functions take their defaults from the dataclasses: the two cannot drift.
    monkeypatch.delenv(SECRET_ENV, raising=False)
    minimal = {"xmpp": {"jid": "rcbot@localhost", "password": "pw"}, "rooms": {"service": "muc.x"}}
    config = parse_config(minimal)
    assert config.xmpp == XmppSettings(jid="rcbot@localhost", password="pw")
    assert config.udp == UdpSettings()
    assert config.rooms == RoomSettings(service="muc.x")
    assert config == BridgeConfig(config.xmpp, UdpSettings(), config.rooms)
    empty_tables = {name: {} for name in ("udp", "delivery", "http", "log", "subscriptions")}
    assert parse_config({**minimal, **empty_tables, "pubsub": {}}) == config
    component = parse_config(
        {**minimal, "xmpp": {"jid": "rc.localhost", "password": "pw", "mode": "component"}}
    )
    assert component.xmpp.port == COMPONENT_PORT


def test_the_nodes_of_a_cluster_are_tried_in_turn_and_read_back() -> None:
    import tomllib

    from udp2xmpp.effective import effective_toml

    servers = ["127.0.0.2:5222", "[::1]:5223"]
    config = parse_config(config_with("xmpp", "servers", servers))
    assert (config.xmpp.host, config.xmpp.port) == ("127.0.0.2", 5222)
    assert config.xmpp.servers == (("127.0.0.2", 5222), ("::1", 5223))
    again = tomllib.loads(effective_toml(config).replace('"***"', '"x"'))
    assert again["xmpp"]["servers"] == servers and "host" not in again["xmpp"]
    assert parse_config(again).xmpp.servers == config.xmpp.servers

    both = config_with("xmpp", "servers", servers)
    both["xmpp"]["host"] = "127.0.0.9"
    with pytest.raises(ConfigError, match=r"xmpp\.servers: give either servers or host/port"):
        parse_config(both)


def test_a_bridge_without_udp_prints_and_reads_back_its_effective_config() -> None:
    """`udp2xmpp check` on a config whose only source is a feed (udp.listen = [])."""
    import tomllib

    from udp2xmpp.effective import effective_toml

    data: dict[str, Any] = {
        "xmpp": {"jid": "rcbot@example.org", "password": "x"},
        "udp": {"listen": []},
        "rooms": {"service": "conference.example.org"},
        "redis": {"url": "redis://127.0.0.1:6379/0", "channels": ["rc"]},
    }
    config = parse_config(data, base_dir=Path("."))
    assert config.udp.listen == ()
    text = effective_toml(config)
    again = tomllib.loads(text.replace('"***"', '"x"'))
    assert again["udp"]["listen"] == []
    assert parse_config(again, base_dir=Path(".")).udp.listen == ()
