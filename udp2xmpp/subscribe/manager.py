"""The watch service's logic, without XMPP: commands, matching, limits, bounces.

`WatchManager` answers a user's command with the reply text (changing the
store and the index when it must), decides for every routed change who gets
it now and who gets it in a digest, and removes the subscriptions of a JID
that keeps bouncing. It runs on the event loop; its clock is passed in, so
tests drive time.

Privacy: what a JID watches is told only to that JID. Logs name a JID only at
debug level; at info and above they show `jid_tag` (a keyed hash, the same
across restarts), never the JID or what it watches.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from xmlrc.wire import RecentChange

from ..config import SubscriptionSettings
from ..source.ratelimit import ALLOW, PENALIZED, SourceRateLimiter
from .commands import (
    HELP,
    USAGE,
    Command,
    CommandError,
    Help,
    ListCommand,
    Mute,
    Unwatch,
    UnwatchAll,
    UnwatchNumber,
    Watch,
    parse_command,
)
from .index import SubscriptionIndex
from .limits import BounceCounter, DeliveryLimiter, Digest
from .model import Subscription, Target
from .store import SubscriptionStore

log = logging.getLogger(__name__)

#: Error conditions of a bounced message that mean "this address does not work".
UNREACHABLE = frozenset(
    {
        "service-unavailable",
        "item-not-found",
        "remote-server-not-found",
        "remote-server-timeout",
        "recipient-unavailable",
        "gone",
        "jid-malformed",
        "not-acceptable",
        "forbidden",
        "not-allowed",
    }
)


@dataclass(frozen=True, slots=True)
class WikiAccess:
    """Who may watch a wiki: `allowed` False when the bridge does not carry it;
    `members` the bare JIDs of a members-only wiki (None: anyone); `outsiders` what a
    wiki nobody configured gets (True: unknown wikis are carried, so they may be
    watched): a non-member of a private wiki is answered exactly that way."""

    allowed: bool = True
    members: frozenset[str] | None = None
    outsiders: bool = False


AccessFn = Callable[[str], WikiAccess]


@dataclass
class WatchStats:
    """The watch logic's counters: commands, subscriptions added and removed, bounces, matches."""

    commands: int = 0
    command_errors: int = 0
    commands_limited: int = 0
    added: int = 0
    removed: int = 0
    removed_bounced: int = 0
    jids_removed_bounced: int = 0
    bounces: int = 0
    muted: int = 0
    not_member: int = 0
    matched: int = 0


class WatchManager:
    """Runs the watch service's logic: commands to replies, changes to recipients, bounces."""

    def __init__(
        self,
        settings: SubscriptionSettings,
        store: SubscriptionStore,
        access: AccessFn,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.access = access
        self.clock = clock
        self.stats = WatchStats()
        self.index = SubscriptionIndex()
        for sub in store.load():
            self.index.add(sub)
        self.mutes = store.mutes()
        self._salt = store.secret()
        self.limiter: DeliveryLimiter[RecentChange] = DeliveryLimiter(
            settings.rate_per_minute,
            settings.burst,
            settings.digest_interval,
            settings.digest_max_items,
            settings.daily_limit,
            jitter=settings.digest_jitter,
        )
        self.bounces = BounceCounter(settings.bounce_limit)
        self.command_limiter = SourceRateLimiter(
            settings.command_rate_per_minute / 60.0,
            settings.command_burst,
            settings.command_penalty,
        )
        self._allowed_domains = frozenset(settings.allow_domains)

    # -- the hot path -----------------------------------------------------------------

    def on_change(self, change: RecentChange) -> list[tuple[str, RecentChange]]:
        """The (JID, change) pairs to send now; others go into digests or are dropped."""
        matched = self.index.match(change)
        if not matched:
            return []
        now = self.clock()
        members = self.access(change.wiki).members
        send: list[tuple[str, RecentChange]] = []
        for jid in matched:
            if members is not None and jid not in members:
                self.stats.not_member += 1  # a member who was removed from a private wiki
                continue
            until = self.mutes.get(jid)
            if until is not None:
                if now < until:
                    self.stats.muted += 1
                    continue
                del self.mutes[jid]  # over; the row goes at the next command
            self.stats.matched += 1
            if self.limiter.offer(jid, change, now):
                send.append((jid, change))
        return send

    def due_digests(self) -> list[Digest[RecentChange]]:
        return self.limiter.due(self.clock())

    # -- bounces --------------------------------------------------------------------------

    def on_bounce(self, jid: str, condition: str) -> bool:
        """A notification to `jid` came back with `condition`. True when its subscriptions
        were removed now (after `bounce_limit` bounces in a row)."""
        if condition not in UNREACHABLE or not self.index.of(jid):
            return False
        self.stats.bounces += 1
        log.debug("notification to %s bounced: %s", jid, condition)
        if not self.bounces.bounced(jid):
            return False
        count = self.drop_jid(jid)
        self.stats.removed_bounced += count
        self.stats.jids_removed_bounced += 1
        log.info(
            "removed %d subscription(s) of %s: %d notifications in a row bounced (%s)",
            count,
            self.jid_tag(jid),
            self.settings.bounce_limit,
            condition,
        )
        return True

    def drop_jid(self, jid: str) -> int:
        subs = self.index.of(jid)
        self.store.remove_jid(jid)
        for sub in subs:
            self.index.remove(sub)
        self.mutes.pop(jid, None)
        self.limiter.forget(jid)
        self.bounces.alive(jid)
        self.stats.removed += len(subs)
        return len(subs)

    def jid_tag(self, jid: str) -> str:
        """A JID as logs show it at info level: ``jid:3f9a0c1be2`` (keyed hash)."""
        digest = hmac.new(self._salt, jid.encode(), hashlib.sha256).hexdigest()[:10]
        return f"jid:{digest}"

    # -- commands -------------------------------------------------------------------------

    def admit_command(self, jid: str) -> str | None:
        """Rate limit per JID. "" to answer, a text to send once when it just went over,
        None to ignore."""
        verdict = self.command_limiter.check(jid, self.clock())
        if verdict == ALLOW:
            return ""
        self.stats.commands_limited += 1
        if verdict == PENALIZED:
            log.info("%s sends too many commands: ignored for a while", self.jid_tag(jid))
            return (
                f"Too many commands: I will ignore yours for "
                f"{self.settings.command_penalty:.0f} seconds."
            )
        return None

    def handle_text(self, jid: str, text: str) -> str:
        """A chat message from `jid` (bare): the reply."""
        try:
            command = parse_command(text)
        except CommandError as exc:
            self.stats.commands += 1
            self.stats.command_errors += 1
            self.bounces.alive(jid)
            return str(exc)
        return self.execute(jid, command)

    def execute(self, jid: str, command: Command) -> str:
        self.stats.commands += 1
        self.bounces.alive(jid)  # it talks to us: its address works
        if isinstance(command, Watch):
            return self._watch(jid, command.target)
        if isinstance(command, Unwatch):
            return self._unwatch(jid, command.target)
        if isinstance(command, UnwatchNumber):
            subs = self.index.of(jid)
            if not 1 <= command.number <= len(subs):
                return f"There is no number {command.number}: you watch {_things(len(subs))}."
            return self._remove(jid, [subs[command.number - 1]])
        if isinstance(command, UnwatchAll):
            subs = self.index.of(jid)
            if not subs:
                return "You watch nothing."
            count = self.drop_jid(jid)
            return f"Stopped watching all {_things(count)}."
        if isinstance(command, ListCommand):
            return self.listing(jid)
        if isinstance(command, Mute):
            return self._mute(jid, command.seconds)
        if isinstance(command, Help):
            return USAGE[command.topic] if command.topic else HELP
        raise AssertionError(command)

    def listing(self, jid: str) -> str:
        subs = self.index.of(jid)
        if not subs:
            lines = ["You watch nothing. Try: watch WIKI TITLE (help: all commands)"]
        else:
            lines = [f"You watch {_things(len(subs))}:"]
            lines.extend(f"{n}. {sub.target.describe()}" for n, sub in enumerate(subs, 1))
        until = self.mutes.get(jid)
        if until is not None and until > self.clock():
            lines.append(f"Muted until {_utc(until)}.")
        return "\n".join(lines)

    def check_new(self, jid: str, target: Target) -> str | None:
        """Why `jid` may not watch `target` now, or None."""
        domain = jid.rpartition("@")[2]
        if self._allowed_domains and domain not in self._allowed_domains:
            return f"Sorry: users of {domain} cannot subscribe here."
        access = self.access(target.wiki)
        allowed = access.allowed
        if access.members is not None and jid not in access.members:
            # An outsider is answered as for a made-up wiki, word for word (refused, or
            # "OK" when unknown wikis are carried; nothing of the private wiki ever
            # reaches it): a private wiki's existence is not confirmed to outsiders.
            allowed = access.outsiders
        if not allowed:
            return f"{target.wiki} is not a wiki you can watch here."
        mine = self.index.of(jid)
        if any(sub.target.key == target.key for sub in mine):
            return f"You already watch {target.describe()}."
        settings = self.settings
        if len(mine) >= settings.max_per_user:
            return f"You watch {_things(len(mine))}, the most allowed: unwatch something first."
        if target.kind == "filter":
            filters = sum(1 for sub in mine if sub.target.kind == "filter")
            if filters >= settings.max_filters_per_user:
                return f"You have {filters} filters, the most allowed: unwatch one first."
            if self.index.count_filters(target.wiki) >= settings.max_filters_per_wiki:
                return f"{target.wiki} has all the filters it may have; watch pages or users."
        if self.index.count_domain(domain) >= settings.max_per_domain:
            return f"Too many subscriptions from {domain} already; try again later."
        if len(self.index) >= settings.max_total:
            return "This bridge takes no more subscriptions for now, sorry."
        return None

    def _watch(self, jid: str, target: Target) -> str:
        refusal = self.check_new(jid, target)
        if refusal is not None:
            return refusal
        sub = self.store.add(jid, target, self.clock())
        if sub is None:
            return f"You already watch {target.describe()}."
        self.index.add(sub)
        self.stats.added += 1
        log.debug("%s watches %s", jid, target)
        stop = _stop_hint(target)
        return f"OK, watching {target.describe()}. (list: what you watch; {stop}: stop)"

    def _unwatch(self, jid: str, target: Target) -> str:
        found = [sub for sub in self.index.of(jid) if sub.target.key == target.key]
        if not found:
            return f"You do not watch {target.describe()}. (list: what you watch)"
        return self._remove(jid, found)

    def remove_ids(self, jid: str, ids: list[int]) -> str:
        """Stop `jid`'s subscriptions with these ids (the ad-hoc unwatch form)."""
        wanted = set(ids)
        subs = [sub for sub in self.index.of(jid) if sub.id in wanted]
        if not subs:
            return "Nothing picked: nothing changed."
        self.stats.commands += 1
        self.bounces.alive(jid)
        return self._remove(jid, subs)

    def _remove(self, jid: str, subs: list[Subscription]) -> str:
        self.store.remove([sub.id for sub in subs])
        for sub in subs:
            self.index.remove(sub)
        self.stats.removed += len(subs)
        if not self.index.of(jid):
            self.limiter.forget(jid)
        log.debug("%s stopped watching %s", jid, [sub.target for sub in subs])
        return "Stopped watching " + ", ".join(sub.target.describe() for sub in subs) + "."

    def _mute(self, jid: str, seconds: int) -> str:
        if seconds == 0:
            self.mutes.pop(jid, None)
            self.store.set_mute(jid, None)
            return "Notifications are on."
        until = self.clock() + seconds
        self.mutes[jid] = until
        self.store.set_mute(jid, until)
        return f"Muted until {_utc(until)}. (unmute: notifications again)"


def _things(count: int) -> str:
    return "1 thing" if count == 1 else f"{count} things"


def _utc(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _stop_hint(target: Target) -> str:
    if target.kind == "page":
        return f"unwatch {target.wiki} {target.name}"
    if target.kind == "user":
        return f"unwatchuser {target.wiki} {target.name}"
    return "unwatch NUMBER"
