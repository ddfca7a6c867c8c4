"""Who watches a change: the in-memory mirror of the subscription table. Pure, no I/O.

The hot path asks `match(change)` for every routed change. It costs one set
lookup for a wiki nobody watches; otherwise one dict lookup by (wiki,
title), one by (wiki, user), and the (few, capped per user) filter
subscriptions of that wiki.
"""

from __future__ import annotations

from collections import Counter

from xmlrc.wire import RecentChange

from .model import CompiledFilter, Subscription, title_variants


class SubscriptionIndex:
    """Answers who watches a change, from an in-memory mirror of the subscription table."""

    def __init__(self) -> None:
        self._pages: dict[tuple[str, str], list[Subscription]] = {}
        self._users: dict[tuple[str, str], list[Subscription]] = {}
        #: wiki -> namespace (None: filters on any namespace) -> the filters to try.
        self._filters: dict[str, dict[int | None, list[CompiledFilter]]] = {}
        #: Subscriptions per wiki: a change of a wiki not in here is skipped at once.
        self._wikis: Counter[str] = Counter()
        self._by_jid: dict[str, dict[int, Subscription]] = {}
        self._by_domain: Counter[str] = Counter()
        self._filter_counts: Counter[str] = Counter()
        self._total = 0

    # -- the hot path -----------------------------------------------------------------

    def match(self, change: RecentChange) -> dict[str, Subscription]:
        """Each JID that watches `change`, with the (first) subscription that matched."""
        wiki = change.wiki
        if wiki not in self._wikis:
            return {}
        found: dict[str, Subscription] = {}
        for sub in self._pages.get((wiki, change.title), ()):
            found.setdefault(sub.jid, sub)
        if change.user:
            for sub in self._users.get((wiki, change.user), ()):
                found.setdefault(sub.jid, sub)
        by_ns = self._filters.get(wiki)
        if by_ns is not None:
            for key in (change.ns, None):
                for compiled in by_ns.get(key, ()):
                    sub = compiled.subscription
                    if sub.jid not in found and compiled.matches(change):
                        found[sub.jid] = sub
        return found

    # -- changes (commands, startup) -----------------------------------------------------

    def add(self, sub: Subscription) -> None:
        target = sub.target
        if target.kind == "page":
            for title in title_variants(target.name):
                self._pages.setdefault((target.wiki, title), []).append(sub)
        elif target.kind == "user":
            self._users.setdefault((target.wiki, target.name), []).append(sub)
        else:
            compiled = CompiledFilter(sub)
            by_ns = self._filters.setdefault(target.wiki, {})
            for key in target.namespaces if target.namespaces is not None else (None,):
                by_ns.setdefault(key, []).append(compiled)
            self._filter_counts[target.wiki] += 1
        self._wikis[target.wiki] += 1
        self._by_jid.setdefault(sub.jid, {})[sub.id] = sub
        self._by_domain[_domain(sub.jid)] += 1
        self._total += 1

    def remove(self, sub: Subscription) -> None:
        target = sub.target
        if target.kind == "page":
            for title in title_variants(target.name):
                _discard(self._pages, (target.wiki, title), sub)
        elif target.kind == "user":
            _discard(self._users, (target.wiki, target.name), sub)
        else:
            by_ns = self._filters.get(target.wiki, {})
            for key in target.namespaces if target.namespaces is not None else (None,):
                filters = by_ns.get(key, [])
                filters[:] = [f for f in filters if f.subscription.id != sub.id]
                if not filters:
                    by_ns.pop(key, None)
            if not by_ns:
                self._filters.pop(target.wiki, None)
            self._filter_counts[target.wiki] -= 1
            if self._filter_counts[target.wiki] <= 0:
                del self._filter_counts[target.wiki]
        self._wikis[target.wiki] -= 1
        if self._wikis[target.wiki] <= 0:
            del self._wikis[target.wiki]
        mine = self._by_jid.get(sub.jid, {})
        mine.pop(sub.id, None)
        if not mine:
            self._by_jid.pop(sub.jid, None)
        domain = _domain(sub.jid)
        self._by_domain[domain] -= 1
        if self._by_domain[domain] <= 0:
            del self._by_domain[domain]
        self._total -= 1

    # -- questions ---------------------------------------------------------------------

    def of(self, jid: str) -> list[Subscription]:
        """A JID's subscriptions, oldest first (the numbering of ``list``)."""
        return sorted(self._by_jid.get(jid, {}).values(), key=lambda s: s.id)

    def count_filters(self, wiki: str) -> int:
        """Filter subscriptions on `wiki` (each is tried on every change of the wiki)."""
        return self._filter_counts.get(wiki, 0)

    def count_domain(self, domain: str) -> int:
        return self._by_domain.get(domain, 0)

    @property
    def jids(self) -> int:
        return len(self._by_jid)

    def __len__(self) -> int:
        return self._total


def _domain(jid: str) -> str:
    return jid.rpartition("@")[2]


def _discard(
    table: dict[tuple[str, str], list[Subscription]], key: tuple[str, str], sub: Subscription
) -> None:
    subs = table.get(key)
    if subs is None:
        return
    subs[:] = [s for s in subs if s.id != sub.id]
    if not subs:
        del table[key]
