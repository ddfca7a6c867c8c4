"""examples/grafana-dashboard.json and examples/prometheus.yml, against what really runs.

The dashboard is loaded as Grafana would (structure, ids, layout, the data source and
job/instance variables); every PromQL query in it, panels' and variables' alike, is
read by a small PromQL reader (`parse_promql`) into its metric selectors, label
matchers, grouping labels and Grafana variables. Then a real bridge (UDP, Redis and
EventStreams sources, its [http] listener) runs against a real Prosody with
``mod_http_openmetrics``, a real redis-server and the throwaway EventStreams server,
is fed valid and malformed input so that its labelled counters have samples, and
both ``/metrics`` pages are scraped over HTTP at the paths the scrape config names.
Every metric a query names must be a sample name of one of those scrapes
(``udp2xmpp_*`` and ``process_*`` of the bridge's, ``prosody_*`` of Prosody's; a
counter's ``_total``, a histogram's ``_bucket``/``_sum``/``_count``, as Prometheus
stores them); every label a query matches on or shows in a legend must exist there.
The scrape config is read by a strict parser of the YAML it uses (the venv has no
PyYAML) and its targets are checked against the shipped example configs.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from harness.eventstreams import EventStreamsServer, load_jsonl
from harness.prosody import ProsodyServer
from harness.redis import RedisServer
from tests.fixtures import XML_FEED_PORT, packets
from tests.helpers import bridge_config, running_bridge, wait_for
from udp2xmpp.bridge import Bridge
from udp2xmpp.source.eventstreams import EventStreamsFeed
from udp2xmpp.source.redis import RedisFeed
from xmlrc.wire import RecentChange
from xmlrc_emitter import Emitter

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "examples" / "grafana-dashboard.json"
SCRAPE_CONFIG = ROOT / "examples" / "prometheus.yml"
RECORDED = load_jsonl(str(ROOT / "tests" / "data" / "eventstreams" / "recentchange.jsonl"))

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
#: Labels Prometheus adds to every series of a target (not in the scraped page).
TARGET_LABELS = frozenset({"job", "instance"})
#: Grafana's own variables usable in a query.
GRAFANA_BUILTINS = frozenset(
    {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}
)
#: The selector every query of each metric family must carry: the dashboard's variables.
SCOPE = {
    "bridge": {"job": "$job", "instance": "$instance"},
    "prosody": {"job": "$prosody_job", "instance": "$prosody_instance"},
}
#: What an operator of the bridge needs on this dashboard (the issue's list).
REQUIRED = {
    "udp2xmpp_datagrams_received_total",
    "udp2xmpp_changes_accepted_total",
    "udp2xmpp_redis_messages_received_total",
    "udp2xmpp_eventstreams_events_total",
    "udp2xmpp_published_total",
    "udp2xmpp_datagrams_rejected_total",
    "udp2xmpp_redis_messages_rejected_total",
    "udp2xmpp_eventstreams_undecodable_total",
    "udp2xmpp_queue_depth",
    "udp2xmpp_queued_bytes",
    "udp2xmpp_pending_changes",
    "udp2xmpp_dropped_total",
    "udp2xmpp_publish_delay_seconds_bucket",
    "udp2xmpp_xmpp_state",
    "udp2xmpp_xmpp_connections_total",
    "udp2xmpp_rooms_refused",
    "udp2xmpp_eventstreams_lag_seconds_bucket",
    "udp2xmpp_eventstreams_last_event_age_seconds",
    "udp2xmpp_eventstreams_reconnects_total",
    "udp2xmpp_rate_limit_penalties_total",
    "udp2xmpp_rate_limit_sources",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "prosody_mod_c2s__connections",
    "prosody_mod_smacks__tx_queued_stanzas_total",
}

# -- a PromQL reader ----------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: PromQL's functions (Prometheus 2 and 3), called as name(...).
FUNCTIONS = _words(
    """abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil
    changes clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week
    day_of_year days_in_month deg delta deriv double_exponential_smoothing exp floor
    histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev
    histogram_stdvar histogram_sum holt_winters hour idelta increase info irate label_join
    label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time
    minute month pi predict_linear present_over_time quantile_over_time rad rate resets
    round scalar sgn sin sinh sort sort_by_label sort_by_label_desc sort_desc sqrt
    stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector year
    start end"""
)
AGGREGATIONS = _words(
    """sum min max avg group stddev stdvar count count_values bottomk topk quantile
    limitk limit_ratio"""
)
GROUPING = frozenset({"by", "without"})
MATCHING = frozenset({"on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"bool", "and", "or", "unless", "offset", "atan2"})
MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<var>\$(?:\{[^}]+\}|\w+))
    |(?P<number>0[xX][0-9a-fA-F]+
        |(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
    """,
    re.VERBOSE,
)
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


class PromQLError(ValueError):
    """A query this reader does not understand (so it cannot vouch for it)."""


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[Matcher, ...] = ()


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    #: Labels of ``by (...)``; ``without`` and the join labels (on, ignoring...) apart.
    by: set[str] = field(default_factory=set)
    without: bool = False
    joins: set[str] = field(default_factory=set)
    aggregated: bool = False
    #: Grafana variables the query uses, anywhere in it.
    variables: set[str] = field(default_factory=set)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLError(f"cannot read {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append((kind, match.group()))
        pos = match.end()
    return out


def _unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    if token.startswith("'"):
        token = '"' + token[1:-1].replace('"', '\\"').replace("\\'", "'") + '"'
    value = json.loads(token)
    assert isinstance(value, str)
    return value


def parse_promql(expr: str) -> Query:
    """The metric selectors, matchers, grouping labels and variables of a PromQL query."""
    query = Query(variables={a or b for a, b in _VARIABLE.findall(expr)})
    tokens = _tokens(expr)
    i = 0

    def peek(offset: int = 0) -> tuple[str, str]:
        at = i + offset
        return tokens[at] if at < len(tokens) else ("end", "")

    def label_list() -> list[str]:
        """``( label, ... )`` from tokens[i] on; leaves i after the ``)``."""
        nonlocal i
        if peek() != ("op", "("):
            raise PromQLError(f"expected a label list in {expr!r}")
        i += 1
        labels: list[str] = []
        while peek() != ("op", ")"):
            kind, value = peek()
            if kind != "ident":
                raise PromQLError(f"expected a label name, got {value!r} in {expr!r}")
            labels.append(value)
            i += 1
            if peek() == ("op", ","):
                i += 1
        i += 1
        return labels

    def matchers() -> tuple[Matcher, ...]:
        """``{ label op "value", ... }`` from tokens[i] on; leaves i after the ``}``."""
        nonlocal i
        i += 1  # the {
        found: list[Matcher] = []
        while peek() != ("op", "}"):
            (kind, label), (_, op), (value_kind, value) = peek(), peek(1), peek(2)
            if kind != "ident" or op not in MATCH_OPS or value_kind != "string":
                raise PromQLError(f"cannot read a label matcher at {label!r} in {expr!r}")
            found.append(Matcher(label, op, _unquote(value)))
            i += 3
            if peek() == ("op", ","):
                i += 1
            elif peek() != ("op", "}"):
                raise PromQLError(f"expected , or }} after a matcher in {expr!r}")
        i += 1
        return tuple(found)

    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "op" and value == "[":  # a range or subquery: durations, variables
            while peek() != ("op", "]"):
                if peek()[0] == "end":
                    raise PromQLError(f"unclosed [ in {expr!r}")
                i += 1
            i += 1
        elif kind == "op" and value == "{":
            raise PromQLError(f"a selector without a metric name in {expr!r}")
        elif kind != "ident":
            i += 1
        elif value in AGGREGATIONS and peek(1)[1] in ("(", "by", "without"):
            query.aggregated = True
            i += 1
        elif value in GROUPING:
            i += 1
            labels = label_list()
            if value == "by":
                query.by.update(labels)
            else:
                query.without = True
        elif value in MATCHING:
            i += 1
            if peek() == ("op", "("):
                query.joins.update(label_list())
        elif value in KEYWORDS or value.lower() in ("inf", "nan"):
            i += 1
        elif peek(1) == ("op", "("):
            if value not in FUNCTIONS:
                raise PromQLError(f"{value}() is not a PromQL function (in {expr!r})")
            i += 1
        else:
            i += 1
            found = matchers() if peek() == ("op", "{") else ()
            if value == "__name__" or any(m.label == "__name__" for m in found):
                raise PromQLError(f"name the metric, not __name__, in {expr!r}")
            query.selectors.append(Selector(value, found))
    return query


_LABEL_VALUES = re.compile(r"\s*label_values\((.*)\)\s*", re.DOTALL)
_QUERY_RESULT = re.compile(r"\s*query_result\((.*)\)\s*", re.DOTALL)


def parse_variable_query(text: str) -> tuple[Query, str | None]:
    """A Prometheus query variable: its query, and the label whose values it lists."""
    if match := _LABEL_VALUES.fullmatch(text):
        inner = match.group(1)
        selector, comma, label = inner.rpartition(",")
        if not comma:  # label_values(label): every series
            return Query(), inner.strip()
        return parse_promql(selector), label.strip()
    if match := _QUERY_RESULT.fullmatch(text):
        return parse_promql(match.group(1)), None
    raise PromQLError(f"a variable query this test does not read: {text!r}")


def test_the_promql_reader_finds_metrics_and_only_metrics() -> None:
    query = parse_promql(
        'histogram_quantile(0.99, sum by (le) (rate(foo_seconds_bucket{job=~"$job", '
        'reason="a,b}"}[$__rate_interval]))) / on (instance) group_left () '
        "sum(rate(foo_seconds_count[5m:1m] offset 1h30m)) > bool 0.5e3 or vector(0)"
    )
    assert [s.metric for s in query.selectors] == ["foo_seconds_bucket", "foo_seconds_count"]
    assert query.selectors[0].matchers == (
        Matcher("job", "=~", "$job"),
        Matcher("reason", "=", "a,b}"),
    )
    assert query.by == {"le"} and query.joins == {"instance"} and query.aggregated
    assert query.variables == {"job", "__rate_interval"}
    topk = parse_promql("topk(10, sum without (room) (x_total)) - time() - min(y:rule) + Inf")
    assert [s.metric for s in topk.selectors] == ["x_total", "y:rule"]
    assert topk.without and not topk.by
    plain = parse_promql('process_open_fds{instance=~"${instance:regex}"}')
    assert plain.variables == {"instance"} and not plain.aggregated
    assert parse_variable_query('label_values(up{job=~"$job"}, instance)')[1] == "instance"
    for broken in (
        "rate(x[5m",  # an unclosed range
        "ratee(x[5m])",  # not a function
        '{__name__="x"}',  # no metric name
        'x{__name__="y"}',
        "x{job=~$job}",  # a matcher's value must be quoted
        "x ~ y",
    ):
        with pytest.raises(PromQLError):
            parse_promql(broken)


# -- the dashboard ------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query_text(variable: dict[str, Any]) -> str:
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    assert isinstance(text, str) and text.strip(), variable["name"]
    return text


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """(where, PromQL, legend format) of every panel target and query variable."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel['title']!r} target {target['refId']}"
            yield where, target["expr"], target.get("legendFormat")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable_query_text(variable), None


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = load_dashboard()
    assert isinstance(dashboard["title"], str) and dashboard["title"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["id"] is None  # set by the Grafana that imports it
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "ejabberd" in dashboard["description"]
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]
    assert {"from", "to"} <= dashboard["time"].keys()

    found = variables(dashboard)
    source = found["DS_PROMETHEUS"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for name in ("job", "instance", "prosody_job", "prosody_instance"):
        assert found[name]["type"] == "query"
        assert found[name]["datasource"] == DATASOURCE
        assert found[name]["includeAll"] is True and found[name]["allValue"] == ".*"
        assert found[name]["definition"] == variable_query_text(found[name])

    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids)), "panel ids repeat"
    used_types = set()
    cells: dict[tuple[int, int], int] = {}
    for panel in all_panels(dashboard):
        used_types.add(panel["type"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, panel["id"]
        assert grid["y"] >= 0 and grid["h"] >= 1, panel["id"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["id"])
                assert other == panel["id"], f"panels {other} and {panel['id']} overlap"
        if panel["type"] == "row":
            assert panel["collapsed"] is False and panel["panels"] == []
            continue
        assert isinstance(panel["title"], str) and panel["title"], panel["id"]
        if panel["type"] == "text":
            assert panel["options"]["content"].strip()
            continue
        assert panel["datasource"] == DATASOURCE, panel["id"]
        targets = panel["targets"]
        assert targets, f"panel {panel['id']} has no query"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), panel["id"]
        for target in targets:
            assert target["datasource"] == DATASOURCE, panel["id"]
            assert isinstance(target["expr"], str) and target["expr"].strip(), panel["id"]
    required = {r["id"] for r in dashboard["__requires"] if r["type"] == "panel"}
    assert used_types - {"row"} <= required, "a panel type missing from __requires"


def test_every_query_is_read_scoped_and_uses_defined_variables() -> None:
    dashboard = load_dashboard()
    defined = set(variables(dashboard)) | GRAFANA_BUILTINS
    named: set[str] = set()
    for where, expr, _legend in queries(dashboard):
        query = parse_promql(expr) if not where.startswith("variable") else None
        if query is None:
            query, _ = parse_variable_query(expr)
        assert query.selectors, f"{where}: names no metric: {expr}"
        assert query.variables <= defined, f"{where}: undefined {query.variables - defined}"
        for selector in query.selectors:
            named.add(selector.metric)
            if where.startswith("variable"):
                continue
            scope = SCOPE["prosody" if selector.metric.startswith("prosody_") else "bridge"]
            got = {m.label: m.value for m in selector.matchers if m.op == "=~"}
            assert {k: got.get(k) for k in scope} == scope, f"{where}: {selector.metric} unscoped"
    assert named >= REQUIRED, f"no panel shows {sorted(REQUIRED - named)}"


# -- the scrape config: a strict reader of the YAML it is written in ----------------------


class YamlSubsetError(ValueError):
    pass


def _strip_comment(line: str) -> str:
    quote = None
    for pos, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#" and (pos == 0 or line[pos - 1] in " \t"):
            return line[:pos].rstrip()
    if quote:
        raise YamlSubsetError(f"unclosed quote: {line!r}")
    return line.rstrip()


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        items = re.findall(r'\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[^,\'"]+)\s*(?:,|$)', inner)
        if ",".join(i.strip() for i in items).replace(" ", "") != inner.replace(" ", ""):
            raise YamlSubsetError(f"cannot read the list {text!r}")
        return [_scalar(item) for item in items] if inner else []
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1].replace("''", "'")
    if not text or text[0] in "{&*!|>%@`[]" or ": " in text or text.endswith(":"):
        raise YamlSubsetError(f"not a plain scalar: {text!r}")
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    return text


def parse_yaml_subset(text: str) -> Any:
    """Block mappings and sequences, flow lists of scalars, comments; nothing else."""
    lines: list[tuple[int, str]] = []
    for raw in text.splitlines():
        if "\t" in raw:
            raise YamlSubsetError(f"a tab: {raw!r}")
        line = _strip_comment(raw)
        if line.strip():
            lines.append((len(line) - len(line.lstrip(" ")), line.strip()))

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1] == "-" or lines[i][1].startswith("- "):
            return sequence(i, indent)
        return mapping(i, indent)

    def mapping(i: int, indent: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            content = lines[i][1]
            match = re.fullmatch(r"([A-Za-z_][\w.-]*):(?:\s+(.*))?", content)
            if match is None:
                raise YamlSubsetError(f"not a key: {content!r}")
            key, value = match.group(1), match.group(2)
            if key in out:
                raise YamlSubsetError(f"key {key!r} twice")
            i += 1
            if value is None:
                if i >= len(lines) or lines[i][0] <= indent:
                    raise YamlSubsetError(f"{key!r} has no value")
                out[key], i = block(i, lines[i][0])
            else:
                out[key] = _scalar(value)
        if i < len(lines) and lines[i][0] > indent:
            raise YamlSubsetError(f"unexpected indentation: {lines[i][1]!r}")
        return out, i

    def sequence(i: int, indent: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("-"):
            rest = lines[i][1][1:].strip()
            if not rest:
                i += 1
                item, i = block(i, lines[i][0])
            elif re.match(r"[A-Za-z_][\w.-]*:(\s|$)", rest):  # "- key: ...": a mapping
                lines[i] = (indent + 2, rest)
                item, i = mapping(i, indent + 2)
            else:
                item, i = _scalar(rest), i + 1
            out.append(item)
        if i < len(lines) and lines[i][0] > indent:
            raise YamlSubsetError(f"unexpected indentation: {lines[i][1]!r}")
        return out, i

    if not lines:
        return None
    value, end = block(0, lines[0][0])
    if end != len(lines):
        raise YamlSubsetError(f"left over: {lines[end][1]!r}")
    return value


def test_the_yaml_reader_reads_what_it_reads_and_refuses_the_rest() -> None:
    got = parse_yaml_subset(
        "a: 1  # one\nb:\n  - x: 'it''s'\n    y: [\"p:1\", q]\n  - plain\nc: \"#not\"\n"
    )
    assert got == {"a": 1, "b": [{"x": "it's", "y": ["p:1", "q"]}, "plain"], "c": "#not"}
    for broken in ("a: 1\n  b: 2\n", "a: 1\na: 2\n", "a: {b: 1}\n", "a: &x 1\n", "a:\n"):
        with pytest.raises(YamlSubsetError):
            parse_yaml_subset(broken)


def scrape_jobs() -> dict[str, dict[str, Any]]:
    config = parse_yaml_subset(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    assert set(config) == {"global", "scrape_configs"}
    duration = re.compile(r"\d+(ms|s|m|h)")
    for key in ("scrape_interval", "scrape_timeout", "evaluation_interval"):
        assert duration.fullmatch(config["global"][key]), key
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert len(jobs) == len(config["scrape_configs"]), "job names repeat"
    for name, job in jobs.items():
        assert set(job) <= {"job_name", "metrics_path", "scheme", "static_configs"}, name
        assert job["scheme"] == "http" and job["metrics_path"].startswith("/"), name
        for static in job["static_configs"]:
            assert set(static) <= {"targets", "labels"}, name
            for target in static["targets"]:
                assert re.fullmatch(r"[\w.-]+:\d+|\[[0-9a-fA-F:]+\]:\d+", target), target
    return jobs


def test_the_scrape_config_targets_the_shipped_configs() -> None:
    jobs = scrape_jobs()
    assert set(jobs) == {"udp2xmpp", "prosody"}  # ejabberd 23.01 has nothing to scrape
    bridge_example = tomllib.loads((ROOT / "examples" / "bridge.toml").read_text())
    assert jobs["udp2xmpp"]["metrics_path"] == "/metrics"
    assert jobs["udp2xmpp"]["static_configs"] == [{"targets": [bridge_example["http"]["listen"]]}]
    prosody_example = (ROOT / "examples" / "prosody.cfg.lua").read_text()
    ports = re.search(r"^http_ports\s*=\s*\{\s*(\d+)", prosody_example, re.MULTILINE)
    interfaces = re.search(r"^http_interfaces\s*=\s*\{([^}]*)\}", prosody_example, re.MULTILINE)
    assert ports is not None and interfaces is not None
    assert '"127.0.0.1"' in interfaces.group(1)
    assert jobs["prosody"]["metrics_path"] == "/metrics"  # mod_http_openmetrics' default path
    assert jobs["prosody"]["static_configs"] == [{"targets": [f"127.0.0.1:{ports.group(1)}"]}]


# -- what a real bridge and a real Prosody export -----------------------------------------

#: What mod_http_openmetrics needs in Prosody 0.12 (what the scrape config's comments say).
OPENMETRICS_CONFIG = """
statistics = "internal"
statistics_interval = "manual"
openmetrics_allow_ips = { "127.0.0.1" }
"""

Samples = dict[str, list[dict[str, str]]]


@dataclass
class Scrapes:
    bridge: Samples
    prosody: Samples

    def of(self, metric: str) -> Samples:
        return self.prosody if metric.startswith("prosody_") else self.bridge


def _samples(families: Any) -> Samples:
    out: Samples = {}
    for family in families:
        for sample in family.samples:
            out.setdefault(sample.name, []).append(dict(sample.labels))
    return out


async def _get(url: str) -> tuple[int, str, str]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def _change(wiki: str, rcid: int) -> RecentChange:
    stamp = datetime.fromtimestamp(int(time.time()), UTC)
    return RecentChange(
        wiki=wiki, type="edit", ns=0, title=f"Dash {rcid}", user="Ops", timestamp=stamp, rcid=rcid
    )


async def _run_and_scrape(prosody: ProsodyServer, redis_server: RedisServer, tmp: Path) -> Scrapes:
    jobs = scrape_jobs()
    events = [copy.deepcopy(e) for e in RECORDED[:4]]
    broken = copy.deepcopy(RECORDED[4])
    del broken["title"]  # a recent change without a title: undecodable
    wikis = sorted({"dashwiki", "testwiki", *(e["wiki"] for e in events)})
    stream = EventStreamsServer(close_after_events=3)  # one routine reconnection
    await stream.start()
    bridge: Bridge | None = None
    publisher = aioredis.Redis.from_url(redis_server.url, password=redis_server.password)
    try:
        config = bridge_config(
            prosody,
            rooms={"room": "dash-{wiki}", "wikis": wikis},
            http={"listen": "127.0.0.1:0"},
            redis={"url": redis_server.url, "password": redis_server.password, "channels": ["rc"]},
            eventstreams={
                "url": stream.url(),
                "since": "0",
                "state_file": str(tmp / "eventstreams.state"),
                "state_interval": 0.1,
                "backoff_initial": 0.02,
                "backoff_max": 0.2,
            },
        )
        bridge = running = await running_bridge(config)
        (es_feed,) = [f for f in running.feeds if isinstance(f, EventStreamsFeed)]
        (redis_feed,) = [f for f in running.feeds if isinstance(f, RedisFeed)]
        await wait_for(lambda: redis_feed.connected, 20, "the Redis feed to subscribe")
        with Emitter(*running.addresses[0]) as emitter:
            for rcid in (1, 2, 3):
                emitter.send(_change("dashwiki", rcid))
            emitter.send_raw(b"<rc>not xml")  # a malformed datagram
        for line in packets(XML_FEED_PORT)[:2]:
            assert await publisher.publish("rc", line) == 1
        assert await publisher.publish("rc", b"{broken") == 1  # a malformed message
        stream.publish([*events, broken])
        await wait_for(lambda: running.stats.received == 4, what="UDP")
        await wait_for(lambda: redis_feed.stats.received == 3, what="the Redis messages")
        await wait_for(
            lambda: (
                sum(es_feed.events.values()) == len(events)
                and sum(es_feed.undecodable.values()) == 1
            ),
            what="the EventStreams events",
        )
        await wait_for(lambda: sum(es_feed.reconnects.values()) >= 1, what="a reconnection")
        accepted = 3 + 2 + len(events)
        assert running.stats.accepted == accepted
        await wait_for(
            lambda: sum(running.publish_metrics.per_room.values()) >= accepted,
            30,
            "every change published",
        )
        assert running.http_address is not None
        host, port = running.http_address
        status, _, bridge_page = await _get(
            f"http://{host}:{port}{jobs['udp2xmpp']['metrics_path']}"
        )
        assert status == 200
        # Prosody's page while the bridge is one of its clients: c2s figures have samples.
        status, kind, prosody_page = await _get(
            f"http://{prosody.host}:{prosody.http_port}{jobs['prosody']['metrics_path']}"
        )
        assert status == 200 and kind.startswith("application/openmetrics-text")
    finally:
        await publisher.aclose()
        if bridge is not None:
            await bridge.stop()
        await stream.stop()
    return Scrapes(
        bridge=_samples(text_string_to_metric_families(bridge_page)),
        prosody=_samples(openmetrics_families(prosody_page)),
    )


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory: pytest.TempPathFactory) -> Scrapes:
    """One real run, scraped; every server is stopped before the tests look at the pages."""
    tmp = tmp_path_factory.mktemp("dashboard")
    prosody = ProsodyServer(
        tmp / "prosody",
        web=True,  # Prosody's HTTP port, where mod_http_openmetrics serves /metrics
        extra_modules=("http_openmetrics",),
        extra_global=OPENMETRICS_CONFIG,
    )
    with prosody, RedisServer() as redis_server:  # both stopped on the way out
        prosody.add_user("rcbot", "bridgepass")
        return asyncio.run(_run_and_scrape(prosody, redis_server, tmp))


def problems(dashboard: dict[str, Any], scrapes: Scrapes) -> list[str]:
    """Why the dashboard's queries would not find what the bridge and Prosody export."""
    out: list[str] = []
    for where, expr, legend in queries(dashboard):
        listed: str | None = None
        if where.startswith("variable"):
            query, listed = parse_variable_query(expr)
        else:
            query = parse_promql(expr)
        labels_seen: set[str] = set(TARGET_LABELS)
        for selector in query.selectors:
            found = scrapes.of(selector.metric).get(selector.metric)
            if not found:
                out.append(f"{where}: {selector.metric} is not exported")
                continue
            names = {name for labels in found for name in labels}
            labels_seen |= names
            for matcher in selector.matchers:
                if matcher.label in TARGET_LABELS:
                    continue
                if matcher.label not in names:
                    out.append(f"{where}: {selector.metric} has no label {matcher.label}")
                elif "$" not in matcher.value and matcher.op in ("=", "=~"):
                    values = {labels.get(matcher.label, "") for labels in found}
                    ok = (
                        matcher.value in values
                        if matcher.op == "="
                        else any(re.fullmatch(matcher.value, v) for v in values)
                    )
                    if not ok:
                        out.append(
                            f"{where}: {selector.metric} never has "
                            f"{matcher.label}{matcher.op}{matcher.value!r}"
                        )
        for label in query.by | query.joins | ({listed} if listed else set()):
            if label not in labels_seen:
                out.append(f"{where}: no metric of it has the label {label}")
        kept = query.by if query.aggregated else labels_seen
        for shown in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend or ""):
            if shown not in kept and not query.without:  # without: whatever is left
                out.append(f"{where}: its legend shows {shown}, which the query drops")
    return out


def test_every_query_names_what_the_real_bridge_and_prosody_export(scrapes: Scrapes) -> None:
    # The run's own figures: the scrapes saw the traffic (the labelled counters are there).
    assert any(
        labels.get("reason") == "bad_xml"
        for labels in scrapes.bridge["udp2xmpp_datagrams_rejected_total"]
    )
    assert scrapes.bridge["udp2xmpp_redis_messages_rejected_total"]
    assert scrapes.bridge["udp2xmpp_eventstreams_undecodable_total"]
    assert any(
        labels.get("type") == "c2s" for labels in scrapes.prosody["prosody_mod_c2s__connections"]
    )
    assert problems(load_dashboard(), scrapes) == []


def test_a_metric_the_bridge_does_not_export_is_named(scrapes: Scrapes) -> None:
    """The check fails, naming what is wrong: a counter without _total, a made-up
    Prosody metric, a label the metric lacks, a label value never seen, a lost legend."""
    dashboard = load_dashboard()
    panel = next(p for p in dashboard["panels"] if p["type"] == "timeseries")
    panel["targets"] = [
        {"refId": "A", "expr": 'sum(rate(udp2xmpp_published{job=~"$job"}[5m]))'},
        {"refId": "B", "expr": "prosody_memory_bytes"},
        {"refId": "C", "expr": 'udp2xmpp_queue_depth{reason="x"}'},
        {"refId": "D", "expr": 'udp2xmpp_dropped_total{reason="lost"}'},
        {"refId": "E", "expr": "sum(udp2xmpp_published_total)", "legendFormat": "{{room}}"},
        {"refId": "F", "expr": "udp2xmpp_publish_delay_seconds"},  # a histogram's family name
    ]
    dashboard["panels"] = [panel]
    dashboard["templating"]["list"] = []
    where = f"panel {panel['id']} {panel['title']!r} target"
    assert problems(dashboard, scrapes) == [
        f"{where} A: udp2xmpp_published is not exported",
        f"{where} B: prosody_memory_bytes is not exported",
        f"{where} C: udp2xmpp_queue_depth has no label reason",
        f"{where} D: udp2xmpp_dropped_total never has reason='lost'",
        f"{where} E: its legend shows room, which the query drops",
        f"{where} F: udp2xmpp_publish_delay_seconds is not exported",
    ]
