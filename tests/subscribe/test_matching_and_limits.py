"""Who gets a change (the index), and when (rate limit, digests, daily volume): pure code."""

from __future__ import annotations

from udp2xmpp.subscribe.index import SubscriptionIndex
from udp2xmpp.subscribe.limits import BounceCounter, DeliveryLimiter
from udp2xmpp.subscribe.model import Subscription, Target

from .helpers import change


def sub(sub_id: int, jid: str, target: Target) -> Subscription:
    return Subscription(sub_id, jid, target)


def test_pages_users_and_filters_match_and_each_jid_once() -> None:
    index = SubscriptionIndex()
    index.add(sub(1, "a@x", Target("page", "testwiki", "sandbox")))  # as typed, lower case
    index.add(sub(2, "b@x", Target("user", "testwiki", "Alice")))
    index.add(sub(3, "a@x", Target("user", "testwiki", "Alice")))  # a@x twice: one message
    index.add(sub(4, "c@x", Target("filter", "testwiki", "", (0,), "List of *", 5)))
    index.add(sub(5, "d@x", Target("page", "otherwiki", "Sandbox")))

    found = index.match(change("Sandbox", user="Alice"))
    assert {jid: s.id for jid, s in found.items()} == {"a@x": 1, "b@x": 2}
    assert set(index.match(change("List of cats", user="Bob"))) == {"c@x"}
    assert index.match(change("List of cats", user="Bob", ns=1)) == {}  # namespace
    assert index.match(change("List of cats", user="Bob", newlen=22)) == {}  # +2 < 5 bytes
    removal = change("List of cats", user="Bob", oldlen=100, newlen=10)
    assert set(index.match(removal)) == {"c@x"}  # min counts bytes removed too
    assert index.match(change("Elsewhere", user="Bob")) == {}
    assert index.match(change("Sandbox", wiki="nobodywiki")) == {}
    assert len(index) == 5 and index.jids == 4 and index.count_domain("x") == 5
    assert index.count_filters("testwiki") == 1 and index.count_filters("otherwiki") == 0


def test_filters_are_tried_by_namespace() -> None:
    index = SubscriptionIndex()
    index.add(sub(1, "a@x", Target("filter", "w", "", (0, 2), None, 1)))
    index.add(sub(2, "b@x", Target("filter", "w", "", None, "Foo*", None)))
    assert set(index.match(change("Foo", wiki="w", ns=2))) == {"a@x", "b@x"}
    assert set(index.match(change("Foo", wiki="w", ns=1))) == {"b@x"}
    assert set(index.match(change("Bar", wiki="w", ns=0))) == {"a@x"}
    assert set(index._filters["w"]) == {0, 2, None}
    index.remove(sub(1, "a@x", Target("filter", "w", "", (0, 2), None, 1)))
    assert set(index._filters["w"]) == {None} and index.count_filters("w") == 1


def test_removal_leaves_nothing_behind() -> None:
    index = SubscriptionIndex()
    subs = [
        sub(1, "a@x", Target("page", "w", "talk:foo")),
        sub(2, "a@y", Target("user", "w", "Bob")),
        sub(3, "a@x", Target("filter", "w", "", None, None, 10)),
    ]
    for s in subs:
        index.add(s)
    assert set(index.match(change("Talk:Foo", wiki="w", user="Bob"))) == {"a@x", "a@y"}
    for s in subs:
        index.remove(s)
    assert index.match(change("Talk:Foo", wiki="w", user="Bob")) == {}
    assert len(index) == 0 and index.jids == 0 and index.count_domain("x") == 0
    assert index._pages == {} and index._users == {} and index._filters == {}
    assert not index._wikis


def test_rate_limit_then_one_digest_per_interval() -> None:
    limiter: DeliveryLimiter[int] = DeliveryLimiter(
        rate_per_minute=6, burst=2, digest_interval=60, digest_max_items=3, daily_limit=1000
    )
    t = 1000.0
    assert [limiter.offer("a", n, t) for n in range(7)] == [True, True] + [False] * 5
    assert limiter.offer("b", 99, t) is True  # another user has his own bucket
    assert limiter.next_due() == t + 60
    assert limiter.due(t + 59) == []
    # A token came back meanwhile, but the digest is pending: the change joins it, in order.
    assert limiter.offer("a", 7, t + 30) is False
    (digest,) = limiter.due(t + 60)
    assert (digest.jid, digest.items, digest.more, digest.total) == ("a", [2, 3, 4], 3, 6)
    assert limiter.pending == 0 and limiter.next_due() is None
    # The bucket refilled (1 per 10 s, at most 2): sent at once again.
    assert limiter.offer("a", 8, t + 100) is True
    stats = limiter.stats
    assert (stats.sent, stats.digested, stats.digests) == (4, 6, 1)


def test_daily_volume_is_told_once_then_only_counted() -> None:
    limiter: DeliveryLimiter[int] = DeliveryLimiter(
        rate_per_minute=600, burst=100, digest_interval=10, digest_max_items=50, daily_limit=3
    )
    t = 0.0
    assert [limiter.offer("a", n, t + n) for n in range(5)] == [True, True, True, False, False]
    (digest,) = limiter.due(t + 100)
    assert digest.items == [] and digest.over_volume == 2
    assert limiter.offer("a", 5, t + 200) is False  # still over: counted, no new digest
    assert limiter.pending == 0 and limiter.stats.over_volume == 3
    assert limiter.offer("a", 6, t + 86_400 + 1) is True  # a new day


def test_flush_all_and_forget() -> None:
    limiter: DeliveryLimiter[int] = DeliveryLimiter(1, 1, 300, 10, 100)
    limiter.offer("a", 1, 0.0)
    limiter.offer("a", 2, 0.0)
    limiter.offer("b", 3, 0.0)
    limiter.offer("b", 4, 0.0)
    assert sorted((d.jid, d.items) for d in limiter.flush_all()) == [("a", [2]), ("b", [4])]
    limiter.offer("a", 5, 1.0)
    limiter.forget("a")
    assert limiter.pending == 0
    assert limiter.offer("a", 6, 1.0) is True  # a fresh bucket


def test_bounces_in_a_row_and_a_sign_of_life() -> None:
    counter = BounceCounter(3)
    assert [counter.bounced("a"), counter.bounced("a")] == [False, False]
    counter.alive("a")
    assert [counter.bounced("a"), counter.bounced("a"), counter.bounced("a")] == [
        False,
        False,
        True,
    ]
    assert len(counter) == 0  # forgotten once it reached the limit
