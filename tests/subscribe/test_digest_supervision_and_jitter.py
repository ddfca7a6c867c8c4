"""The digest task survives bad input (issue 11), and digest jitter stays in its bounds.

Unit tests: the watch service on a `Session` that never connects (nothing is
sent; what would be is read from its queue), its loops owned by a
`Supervisor` with a short restart delay, and a fake clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import udp2xmpp.subscribe.service as service_module
from udp2xmpp.config import BridgeConfig, ConfigError, parse_config
from udp2xmpp.route import Router
from udp2xmpp.subscribe import SubscriptionService, messages
from udp2xmpp.subscribe.limits import DeliveryLimiter
from xmlrc.tasks import Supervisor
from xmlrc.xmpp import Endpoint, Outbox, Session

from .helpers import FakeClock, change, until

ALICE = "alice@localhost"


def config(tmp_path: Path, **subscriptions: Any) -> BridgeConfig:
    return parse_config(
        {
            "xmpp": {"jid": "rcbot@localhost", "password": "unused", "host": "127.0.0.1"},
            "udp": {"listen": "127.0.0.1:0"},
            "rooms": {"service": "conference.localhost", "wikis": ["digestwiki"]},
            "subscriptions": {
                "enabled": True,
                "database": str(tmp_path / "subs.sqlite"),
                **subscriptions,
            },
        }
    )


@pytest.fixture
async def watch(tmp_path: Path) -> AsyncIterator[tuple[SubscriptionService, FakeClock]]:
    settings = config(tmp_path, rate_per_minute=1, burst=1, digest_interval=60)
    session = Session(Endpoint("rcbot@localhost", "unused", "127.0.0.1", 9))  # never started
    router = Router.from_settings(settings.rooms)
    clock = FakeClock()
    service = SubscriptionService(
        settings.subscriptions,
        session,
        Outbox(session.client, 100.0, 1_000_000.0),
        lambda: router,
        lambda: settings.rooms,
        clock=clock,
        supervisor=Supervisor(restart_delay=0.01),
    )
    service.open()
    await service.start()
    try:
        yield service, clock
    finally:
        await service.stop(timeout=0)
        await session.stop()


def digests_queued(service: SubscriptionService) -> list[str]:
    return [item for item in service._queue if isinstance(item, str) and "Digest: " in item]


async def next_digest_due(service: SubscriptionService, clock: FakeClock, *titles: str) -> None:
    """Changes over the rate limit for alice, then the clock past their digest's time."""
    for n, title in enumerate(titles):
        service.on_change(change(title, int(clock.now) % 100_000 + n, wiki="digestwiki"))
    clock.now += 61
    service._digest_wake.set()


async def test_a_digest_that_cannot_be_built_does_not_stop_the_others(
    watch: tuple[SubscriptionService, FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, clock = watch
    manager = service.manager
    assert manager is not None
    assert manager.handle_text(ALICE, "watchfilter digestwiki ns=0").startswith("OK")
    real = messages.digest_body
    calls: list[int] = []

    def pathological_once(*args: Any, **kwargs: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a change nobody foresaw")
        return real(*args, **kwargs)

    monkeypatch.setattr(service_module, "digest_body", pathological_once)
    await next_digest_due(service, clock, "First", "Bad one")  # one sent, one digested
    await until(lambda: service.stats.digest_errors == 1, 5, "the bad digest")
    await next_digest_due(service, clock, "Sent at once", "Later")
    await until(lambda: len(digests_queued(service)) == 1, 5, "the next digest")
    assert "[[Later]]" in digests_queued(service)[0]
    assert len(service.supervisor) == 2  # both loops still running


async def test_a_failing_digest_loop_is_restarted_by_its_supervisor(
    watch: tuple[SubscriptionService, FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, clock = watch
    manager = service.manager
    assert manager is not None
    assert manager.handle_text(ALICE, "watchfilter digestwiki ns=0").startswith("OK")
    real = manager.due_digests
    failures = [RuntimeError("the limiter's state was corrupt")]

    def due_digests() -> Any:
        if failures:
            raise failures.pop()
        return real()

    monkeypatch.setattr(manager, "due_digests", due_digests)
    service._digest_wake.set()
    await until(lambda: service.supervisor.restarts == 1, 5, "the restart")
    await next_digest_due(service, clock, "First", "Second")
    await until(lambda: len(digests_queued(service)) == 1, 5, "a digest after the restart")
    assert "[[Second]]" in digests_queued(service)[0]


async def test_stop_never_raises_even_when_the_database_cannot_close(
    watch: tuple[SubscriptionService, FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, _clock = watch
    manager = service.manager
    assert manager is not None

    def broken_close() -> None:
        raise OSError("disk gone")

    store_close = manager.store.close
    monkeypatch.setattr(manager.store, "close", broken_close)
    await service.stop(timeout=0)
    assert service.manager is None and len(service.supervisor) == 0
    store_close()


def test_digest_jitter_is_a_uniform_extra_delay_within_its_bounds() -> None:
    draws = iter([0.0, 0.5, 0.999_999])
    limiter: DeliveryLimiter[str] = DeliveryLimiter(
        60, 1, 300.0, 10, 1000, jitter=30.0, random=draws.__next__
    )
    now = 1000.0
    dues = []
    for jid in ("a@x", "b@x", "c@x"):
        assert limiter.offer(jid, "sent at once", now)
        assert not limiter.offer(jid, "digested", now)  # starts the digest: one draw
        assert not limiter.offer(jid, "joins it", now)  # no draw
    dues = sorted(digest.due - now for digest in limiter.flush_all())
    assert dues == pytest.approx([300.0, 315.0, 329.99997])
    assert all(300.0 <= due <= 330.0 for due in dues)


def test_without_jitter_a_digest_waits_exactly_its_interval() -> None:
    def never() -> float:
        raise AssertionError("no jitter: no random draw")

    limiter: DeliveryLimiter[str] = DeliveryLimiter(60, 1, 300.0, 10, 1000, random=never)
    limiter.offer("a@x", "x", 5.0)
    limiter.offer("a@x", "y", 5.0)
    assert limiter.next_due() == 305.0


def test_digest_jitter_is_validated_and_off_by_default(tmp_path: Path) -> None:
    assert config(tmp_path).subscriptions.digest_jitter == 0.0
    assert config(tmp_path, digest_jitter=120).subscriptions.digest_jitter == 120.0
    with pytest.raises(ConfigError, match=r"subscriptions\.digest_jitter: must be at least 0"):
        config(tmp_path, digest_jitter=-1)
    with pytest.raises(ConfigError, match=r"subscriptions\.digest_jitter: at most 86400"):
        config(tmp_path, digest_jitter=90_000)
    with pytest.raises(ConfigError, match=r"subscriptions\.digest_jitter: must be a number"):
        config(tmp_path, digest_jitter="1m")
