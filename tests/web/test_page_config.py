"""The [http] page keys: defaults, validation, and what the policy lets the page reach."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from udp2xmpp.config import ConfigError, parse_config
from udp2xmpp.httpd import page_headers, web_files


def config(**http: Any) -> Any:
    data = {
        "xmpp": {"jid": "rcbot@localhost", "password": "p"},
        "rooms": {"service": "rooms.localhost"},
        "http": {"listen": "127.0.0.1:0", **http},
    }
    return parse_config(data, base_dir=Path("."))


def test_the_page_is_on_by_default_without_defaults_of_its_own() -> None:
    http = config().http
    assert http.page is True
    assert (http.page_websocket, http.page_domain, http.page_muc) == (None, None, None)


def test_page_keys_are_read_and_the_websocket_must_be_ws_or_wss() -> None:
    http = config(
        page=False, page_websocket="wss://x.example/ws", page_domain="anon.x", page_muc="m.x"
    ).http
    assert (http.page, http.page_websocket, http.page_domain, http.page_muc) == (
        False,
        "wss://x.example/ws",
        "anon.x",
        "m.x",
    )
    for bad in ("https://x.example/ws", "javascript:alert(1)", "wss://x/'; script-src *"):
        with pytest.raises(ConfigError, match="page_websocket"):
            config(page_websocket=bad)
    with pytest.raises(ConfigError, match=r"http\.page:"):
        config(page="yes")


def test_the_policy_allows_only_the_configured_websocket() -> None:
    policy = page_headers("wss://x.example/ws")["Content-Security-Policy"]
    assert "connect-src 'self' wss://x.example/ws;" in policy
    assert "ws:" not in policy.replace("wss://x.example/ws", "")


def test_the_served_files_are_the_page_and_its_vendored_library() -> None:
    assert set(web_files()) == {
        "index.html",
        "app.js",
        "style.css",
        "vendor/strophe.umd.min.js",
        "vendor/strophe.LICENSE.txt",
    }
