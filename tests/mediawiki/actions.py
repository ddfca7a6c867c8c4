"""Make real changes on a test MediaWiki, and note what its API reports for each.

`WikiDriver` performs labelled actions (an edit, a page creation, a bot edit,
a move, a block, ...) through the action API, as real clients would: logged
in with bot passwords (``Admin@xmlrc``, ``BridgeBot@xmlrc``) or anonymously.
After each action it reads ``list=recentchanges`` with every rcprop and keeps
the rows that action created, as the API reported them right then: the
oracle each delivered change is compared with (later the API may forget
rows, e.g. those of a deleted page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from harness.mediawiki import MediaWikiServer
from rc2udp.api import ApiClient, user_agent
from xmlrc.wire import RecentChange
from xmlrc.wire.apijson import RCPROP, Site, change_from_api, site_from_siteinfo

AGENT = user_agent("xmlrc tests <root@localhost>")

#: 500 characters (MediaWiki's limit for comments), none of them ASCII-only
#: friendly: accents, CJK, an emoji, and characters XML and JSON must escape.
LONG_COMMENT = ('Ünïcödé <&> "ä" 日本語 — ✓ 🦆 ' * 40)[:500]
UNICODE_TITLE = "Ünïcödé — 日本語/テスト"


@dataclass
class Action:
    """One labelled action and the API rows (rcid -> item) it created."""

    label: str
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)


class WikiDriver:
    """Admin, bot and anonymous sessions on one wiki, and the rows each action made."""

    def __init__(self, wiki: MediaWikiServer) -> None:
        self.wiki = wiki
        self.admin = ApiClient(wiki.api_url, user_agent=AGENT, maxlag=None)
        self.bot = ApiClient(wiki.api_url, user_agent=AGENT, maxlag=None)
        self.anon = ApiClient(wiki.api_url, user_agent=AGENT, maxlag=None)
        self.actions: list[Action] = []
        self.site: Site | None = None
        self._last_rcid = 0

    async def __aenter__(self) -> WikiDriver:
        try:
            await self.admin.login(*self.wiki.admin_login)
            await self.bot.login(*self.wiki.bot_login)
            general = await self.admin.get({"action": "query", "meta": "siteinfo"})
            self.site = site_from_siteinfo(general["query"]["general"], self.wiki.api_url)
            self._last_rcid = max((int(r["rcid"]) for r in await self.latest_rows()), default=0)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for client in (self.admin, self.bot, self.anon):
            await client.close()

    # -- the API as oracle --------------------------------------------------------------

    async def latest_rows(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest rows, every rcprop (the admin may read patrol flags)."""
        data = await self.admin.get(
            {
                "action": "query",
                "list": "recentchanges",
                "rcprop": RCPROP,
                "rctype": "edit|new|log|categorize|external",
                "rclimit": str(limit),
            }
        )
        rows: list[dict[str, Any]] = data["query"]["recentchanges"]
        return rows

    async def all_rows(self) -> list[dict[str, Any]]:
        """Every row the API still has, oldest first (the final oracle)."""
        rows: list[dict[str, Any]] = []
        params = {
            "action": "query",
            "list": "recentchanges",
            "rcprop": RCPROP,
            "rctype": "edit|new|log|categorize|external",
            "rcdir": "newer",
            "rclimit": "max",
        }
        continuation: dict[str, str] = {}
        for _page in range(100):
            data = await self.admin.get({**params, **continuation})
            rows.extend(data["query"]["recentchanges"])
            if "continue" not in data:
                return rows
            continuation = data["continue"]
        raise AssertionError("more than 100 pages of recent changes")

    def change(self, item: dict[str, Any]) -> RecentChange:
        assert self.site is not None
        return change_from_api(item, self.site)

    async def _note(self, label: str) -> Action:
        """Record the rows created since the previous action under `label`."""
        rows = [r for r in await self.latest_rows() if int(r["rcid"]) > self._last_rcid]
        action = Action(label, {int(r["rcid"]): r for r in sorted(rows, key=lambda r: r["rcid"])})
        if rows:
            self._last_rcid = max(action.rows)
        self.actions.append(action)
        return action

    def oracle(self) -> dict[int, RecentChange]:
        """rcid -> the change as the API reported it right after its action."""
        return {
            rcid: self.change(item) for action in self.actions for rcid, item in action.rows.items()
        }

    def rcids(self, label: str) -> list[int]:
        return [rcid for a in self.actions if a.label == label for rcid in a.rows]

    # -- actions ------------------------------------------------------------------------

    async def edit(
        self, label: str, title: str, text: str, summary: str, *, as_: str = "admin", **extra: str
    ) -> Action:
        client = {"admin": self.admin, "bot": self.bot, "anon": self.anon}[as_]
        answer = await client.write(
            {"action": "edit", "title": title, "text": text, "summary": summary, **extra}
        )
        assert answer.get("edit", {}).get("result") == "Success", answer
        return await self._note(label)

    async def do(self, label: str, params: dict[str, str]) -> Action:
        """Any write action as the admin (move, protect, delete, block)."""
        answer = await self.admin.write(params)
        assert "error" not in answer, answer
        return await self._note(label)

    async def create_account(self, label: str, name: str) -> Action:
        token = await self.anon.token("createaccount")
        password = "Pass-" + name + "-0123456789"
        answer = await self.anon.post(
            {
                "action": "createaccount",
                "username": name,
                "password": password,
                "retype": password,
                "createreturnurl": self.wiki.server_url + "/",
                "createtoken": token,
            }
        )
        assert answer.get("createaccount", {}).get("status") == "PASS", answer
        return await self._note(label)

    async def every_kind_of_change(self, tag: str) -> None:
        """The changes the feeds and the poller must carry, each under its label."""
        page = f"Xmlrc page {tag}"
        await self.edit("page creation", page, "First version.", "create the page")
        await self.edit("edit", page, "First version, edited.", 'plain edit <b>&amp; "q"</b>')
        await self.edit("minor edit", page, "First version, edited!", "typo", minor="1")
        await self.edit("bot edit", page, "Edited by a bot.", "bot", as_="bot", bot="1")
        await self.edit("anonymous edit", page, "An IP was here.", "anon", as_="anon")
        await self.edit("unicode title", f"{UNICODE_TITLE} {tag}", "ü", "unicode page")
        await self.edit("500-character comment", page, "Long comment.", LONG_COMMENT)
        doomed = f"Xmlrc doomed {tag}"
        await self.edit("page to delete", doomed, "Short-lived.", "to be deleted")
        moved = f"{page} (moved)"
        await self.do("move", {"action": "move", "from": page, "to": moved, "reason": "rename"})
        await self.do(
            "protect",
            {"action": "protect", "title": moved, "protections": "edit=sysop", "reason": "guard"},
        )
        await self.do("delete", {"action": "delete", "title": doomed, "reason": "cleanup"})
        await self.do(
            "block",
            {"action": "block", "user": "192.0.2.7", "expiry": "1 day", "reason": "vandalism"},
        )
        await self.create_account("account creation", f"Xmlrc user {tag}")
