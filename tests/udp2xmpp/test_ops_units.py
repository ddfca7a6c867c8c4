"""Operations, as pure code: log formats, the effective config, the metrics families."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from udp2xmpp.bridge import Bridge
from udp2xmpp.config import BridgeConfig, parse_config
from udp2xmpp.effective import effective_toml
from udp2xmpp.logs import JsonFormatter, choose_format, setup_logging
from udp2xmpp.metrics import DelayHistogram, PublishMetrics
from udp2xmpp.route import RoomSpec
from xmlrc.wire import RecentChange

# -- logs -------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    slixmpp_level = logging.getLogger("slixmpp").level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("slixmpp").setLevel(slixmpp_level)


def test_json_formatter_fields() -> None:
    record = logging.LogRecord(
        "udp2xmpp.bridge", logging.WARNING, __file__, 1, "dropped %s: %s", ("1.2.3.4", "é\n"), None
    )
    record.created = 1_700_000_000.25
    record.room = "enwiki@conference.localhost"  # an extra= field
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "warning",
        "logger": "udp2xmpp.bridge",
        "message": "dropped 1.2.3.4: é\n",
        "room": "enwiki@conference.localhost",
    }


def test_json_formatter_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed"
    assert entry["exception"].startswith("Traceback") and "RuntimeError: boom" in entry["exception"]


def test_auto_is_text_on_a_terminal_json_otherwise() -> None:
    assert choose_format("auto", Terminal()) == "text"
    assert choose_format("auto", io.StringIO()) == "json"
    assert choose_format("text", io.StringIO()) == "text"
    assert choose_format("json", Terminal()) == "json"
    with pytest.raises(ValueError, match="log format"):
        choose_format("xml", io.StringIO())


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging_writes_json_lines_or_text() -> None:
    stream = io.StringIO()
    assert setup_logging("auto", "info", stream) == "json"
    logging.getLogger("udp2xmpp.test").info("hello %s", "world")
    logging.getLogger("udp2xmpp.test").debug("not at info")
    logging.getLogger("slixmpp.xmlstream").info("chatty")  # slixmpp: warnings and up only
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["hello world"]

    text = Terminal()
    assert setup_logging("auto", "debug", text) == "text"
    logging.getLogger("udp2xmpp.test").debug("plain")
    assert text.getvalue().rstrip().endswith("DEBUG udp2xmpp.test: plain")
    assert len(logging.getLogger().handlers) == 1  # replaced, not stacked


# -- the effective config ----------------------------------------------------------------

FULL = {
    "xmpp": {"jid": "rcbot@localhost", "password": "xmpp-password-value", "host": "127.0.0.1"},
    "udp": {
        "listen": ["127.0.0.1:9390", "[::1]:9390"],
        "allow": ["127.0.0.1/32", "2001:db8::/32"],
        "secret": "udp-secret-value-0123456789",
        "require_signature": True,
        "rate_limit": {"per_source_rate": 100.5, "burst": 1000, "penalty_seconds": 30},
    },
    "rooms": {
        "service": "conference.localhost",
        "room": "rc-{wiki}",
        "wikis": ["enwiki", "dewiki"],
        "description": 'Changes of {wiki}: "quoted" \\ and\ttab',
        "all_room": "everything",
        "filtered": [
            {"room": "new-pages", "wiki": "enwiki", "type": ["new"], "ns": [0, 2]},
            {"room": "big", "min_change": 5000, "title_regex": r"^Foo\s+[\"]bar", "bot": False},
        ],
    },
    "wikis": {"enwiki": {"title": "English Wikipedia", "server_url": "https://en.example.org"}},
    "delivery": {"queue_size": 5000},
    "http": {"listen": "127.0.0.1:9391"},
    "log": {"format": "json", "level": "warning"},
}


def read_back(text: str, secrets: dict[str, str]) -> BridgeConfig:
    data = tomllib.loads(text)
    for dotted, value in secrets.items():
        section, key = dotted.split(".")
        assert data[section][key] == "***"
        data[section][key] = value
    return parse_config(data, base_dir=Path("."))


def test_effective_config_reads_back_as_the_same_config() -> None:
    config = parse_config(FULL, base_dir=Path("."))
    text = effective_toml(config)
    assert "xmpp-password-value" not in text and "udp-secret-value" not in text
    again = read_back(
        text, {"xmpp.password": "xmpp-password-value", "udp.secret": "udp-secret-value-0123456789"}
    )
    assert dataclasses.replace(again, source=config.source) == config
    assert effective_toml(again) == text  # stable


def test_effective_config_of_a_minimal_file_has_every_key() -> None:
    config = parse_config(
        {
            "xmpp": {"jid": "rcbot@localhost", "password": "p"},
            "rooms": {"service": "conference.localhost"},
        },
        base_dir=Path("."),
    )
    text = effective_toml(config)
    for section in ("xmpp", "udp", "rooms", "delivery", "http", "log"):
        assert f"\n[{section}]\n" in f"\n{text}"
    assert "[udp.rate_limit]" in text
    lines = set(text.splitlines())
    assert 'allow = ["127.0.0.0/8", "::1/128"]' in lines
    assert "# secret = (not set)" in lines and "# listen = (not set)" in lines
    assert 'format = "auto"' in lines and "per_source_rate = 5000.0" in lines

    def every_field(obj: Any) -> Iterator[str]:
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if dataclasses.is_dataclass(value):
                yield from every_field(value)
            elif field.name != "routing":
                yield field.name

    keys = {line.lstrip("# ").split(" = ")[0] for line in lines if " = " in line}
    for section in ("xmpp", "udp", "delivery", "http", "log"):
        assert set(every_field(getattr(config, section))) <= keys
    assert read_back(text, {"xmpp.password": "p"}) == config


# -- metrics ------------------------------------------------------------------------------


def test_delay_histogram_is_cumulative() -> None:
    histogram = DelayHistogram((1, 10))
    for value in (0.0, 0.5, 1.0, 3, 11, 500):
        histogram.observe(value)
    assert histogram.cumulative() == [("1.0", 3), ("10.0", 4), ("+Inf", 6)]
    assert histogram.count == 6 and histogram.sum == 515.5


def test_publish_hook_counts_per_room_and_measures_from_the_change_timestamp() -> None:
    metrics = PublishMetrics(clock=lambda: 1_700_000_100.0)
    change = RecentChange(
        wiki="w", type="edit", ns=0, title="T",
        timestamp=datetime.fromtimestamp(1_700_000_000, UTC),
    )  # fmt: skip
    room = RoomSpec(jid="w@conference.localhost", title="w", description="")
    metrics.on_published(room, change)
    metrics.on_published("all@conference.localhost", change)  # a bare JID works too
    assert metrics.per_room == {"w@conference.localhost": 1, "all@conference.localhost": 1}
    assert metrics.delay.count == 2 and metrics.delay.sum == 200.0
    future = change.with_changes(timestamp=datetime.fromtimestamp(1_700_000_200, UTC))
    metrics.on_published(room, future)  # the wiki's clock ahead of ours: counted as 0
    assert metrics.delay.cumulative()[0] == ("0.25", 1)


async def test_collector_reads_the_counters_at_scrape_time() -> None:
    bridge = Bridge(parse_config(FULL, base_dir=Path(".")))  # not started: nothing to stop
    bridge.stats.received = 7
    bridge.stats.accepted = 4
    bridge.stats.rejected.update({"bad_xml": 2, "not_allowed": 1})
    bridge.sink.stats.dropped_overflow = 3
    bridge.publish_metrics.per_room["enwiki@conference.localhost"] = 4
    for _ in range(4):
        bridge.publish_metrics.delay.observe(2.0)
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(bridge.metrics).decode())
    }

    def value(name: str, **labels: str) -> float:
        family = families[name]
        for sample in family.samples:
            if sample.labels == labels and sample.name in (name, f"{name}_total"):
                return float(sample.value)
        raise AssertionError(f"no sample {name}{labels}")

    assert value("udp2xmpp_datagrams_received") == 7
    assert value("udp2xmpp_changes_accepted") == 4
    assert value("udp2xmpp_datagrams_rejected", reason="bad_xml") == 2
    assert value("udp2xmpp_datagrams_rejected", reason="not_allowed") == 1
    assert value("udp2xmpp_datagrams_rejected", reason="rate_limited") == 0  # known reasons: 0
    assert value("udp2xmpp_published", room="enwiki@conference.localhost") == 4
    assert value("udp2xmpp_dropped", reason="overflow") == 3
    assert value("udp2xmpp_xmpp_connected") == 0
    assert value("udp2xmpp_xmpp_state", state="disconnected") == 1
    assert value("udp2xmpp_udp_listening") == 0
    assert value("udp2xmpp_rate_limit_penalties") == 0
    delay = families["udp2xmpp_publish_delay_seconds"]
    samples = {(s.name, s.labels.get("le")): s.value for s in delay.samples}
    assert samples[("udp2xmpp_publish_delay_seconds_count", None)] == 4
    assert samples[("udp2xmpp_publish_delay_seconds_bucket", "1.0")] == 0
    assert samples[("udp2xmpp_publish_delay_seconds_bucket", "2.0")] == 4
    assert "process_cpu_seconds" in families  # the process collector, in this registry only


# -- examples ----------------------------------------------------------------------------

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_the_example_bridge_toml_is_a_valid_config_with_every_key() -> None:
    data = tomllib.loads((EXAMPLES / "bridge.toml").read_text())
    assert data["xmpp"].pop("password_file") == "/etc/xmlrc/xmpp-password"
    data["xmpp"]["password"] = "x"
    config = parse_config(data, base_dir=Path("."))
    assert config.http.listen == ("127.0.0.1", 9391)
    # Every key the effective config has (but the secrets) is in the example.
    given = {
        line.split("=")[0].strip().lstrip("# ")
        for line in (EXAMPLES / "bridge.toml").read_text().splitlines()
        if "=" in line
    }
    wanted = {
        line.lstrip("# ").split(" = ")[0]
        for line in effective_toml(config).splitlines()
        if " = " in line
    } - {"password", "secret"}  # the example names them as password_file, secret_file
    assert wanted <= given, wanted - given
