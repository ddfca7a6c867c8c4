"""A polite client for one wiki's action API (``api.php``), on aiohttp.

Responsible for how rc2udp talks HTTP, nothing else:

- a User-Agent that names the tool and a contact, as Wikimedia's User-Agent
  policy asks (https://meta.wikimedia.org/wiki/User-Agent_policy);
- ``maxlag`` on every request, so a lagged wiki cluster is left alone;
- retries: ``Retry-After`` is honoured on 429, 503 and ``maxlag`` answers;
  other transient failures (connection errors, timeouts, 5xx, ``readonly``,
  ``ratelimited``, internal errors, an HTML page instead of JSON) wait with
  exponential backoff and jitter; a bounded number of attempts, then
  `ApiError`;
- an optional bot-password login (``action=login``), kept alive with
  ``assert=user``: a lost session is logged in again;
- one request at a time per wiki (no parallel hammering);
- bounds against a broken or hostile server (`Limits`): redirects are
  followed by hand, only within the API's own origin and a bounded number of
  times, so no password, token or cookie ever reaches another origin; an
  answer is read as a stream and refused past ``max_response_bytes``.

What to ask and what the answers mean lives in `xmlrc.wire.apijson`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from .limits import Limits

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

#: API error codes worth waiting for (the wiki is busy, not our request wrong);
#: ``internal_api_error_*`` (a database hiccup) too.
_TRANSIENT_CODES = frozenset({"maxlag", "ratelimited", "readonly"})
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Redirects that keep the method and body (307, 308) and those that do not.
_REDIRECTS_KEEPING_BODY = frozenset({307, 308})
_REDIRECTS = frozenset({301, 302, 303}) | _REDIRECTS_KEEPING_BODY
_CHUNK = 64 * 1024


class ApiError(Exception):
    """The API refused a request, or kept failing until the attempts ran out."""

    def __init__(self, code: str, info: str) -> None:
        super().__init__(f"{code}: {info}")
        self.code = code
        self.info = info


def version() -> str:
    try:
        return metadata.version("xmlrc")
    except metadata.PackageNotFoundError:
        return "0"


def user_agent(contact: str | None, tool: str = "rc2udp") -> str:
    """``rc2udp/V (xmlrc; CONTACT) aiohttp/V python/V``: tool, contact, libraries.
    `tool` names the program that asks (``rcclient-audit`` for ``rcclient audit``)."""
    who = f"xmlrc; {contact}" if contact else "xmlrc; no contact given"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"{tool}/{version()} ({who}) aiohttp/{aiohttp.__version__} python/{python}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to keep trying one request, and how long to wait in between."""

    attempts: int = 8
    #: Backoff before retry n (1, 2, ...) is drawn from [d/2, d], d = min(cap, base * 2**(n-1)).
    backoff_base: float = 1.0
    backoff_cap: float = 120.0
    #: A Retry-After beyond this is cut to it (a wiki asking for an hour is waited on in steps).
    max_retry_after: float = 600.0
    #: Seconds before one HTTP request is abandoned (and retried).
    timeout: float = 60.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with jitter for retry number `attempt` (1-based)."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** max(attempt - 1, 0))
        return rng.uniform(ceiling / 2, ceiling)

    def honour(self, retry_after: float, rng: random.Random) -> float:
        """The wait for a ``Retry-After`` of `retry_after` s: at least that, plus up to 1 s."""
        return min(retry_after, self.max_retry_after) + rng.uniform(0, 1)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def origin(url: URL) -> tuple[str, str, int | None]:
    """Scheme, host and port (explicit or the scheme's default): what a browser calls an origin."""
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def _shown_origin(url: URL) -> str:
    return str(url.origin())


class _Retry(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class ApiClient:
    """Requests to one ``api.php``, politely.  Use as ``async with ApiClient(...)``."""

    def __init__(
        self,
        api_url: str,
        *,
        user_agent: str,
        maxlag: int | None = 5,
        retry: RetryPolicy | None = None,
        limits: Limits | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.api_url = api_url
        self.user_agent = user_agent
        self.maxlag = maxlag
        self.retry = retry or RetryPolicy()
        self.limits = limits or Limits()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._login: tuple[str, str] | None = None
        self.logged_in_as: str | None = None
        #: Requests sent, retries waited for (by reason): for logs and tests.
        self.requests = 0
        self.retries: dict[str, int] = {}

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": self.user_agent},
                timeout=aiohttp.ClientTimeout(total=self.retry.timeout),
                # Keep the login cookies even for a wiki addressed by IP (loopback tests).
                cookie_jar=aiohttp.CookieJar(unsafe=True),
                raise_for_status=False,
            )
        return self._session

    # -- requests -----------------------------------------------------------------------

    async def get(self, params: Mapping[str, str]) -> dict[str, Any]:
        """A read request (GET, so caches can answer it), retried as the policy says."""
        async with self._lock:
            return await self._with_retries("GET", params)

    async def post(self, params: Mapping[str, str]) -> dict[str, Any]:
        """A request that changes something (POST), retried like a read: MediaWiki
        refuses a lagged or throttled write before doing anything."""
        async with self._lock:
            return await self._with_retries("POST", params)

    async def _with_retries(self, method: str, params: Mapping[str, str]) -> dict[str, Any]:
        attempt = 0
        relogged = False
        while True:
            attempt += 1
            try:
                return await self._attempt(method, params)
            except _Retry as failure:
                if attempt >= self.retry.attempts:
                    raise ApiError(
                        "unavailable", f"{failure.reason}; gave up after {attempt} attempts"
                    ) from None
                kind = failure.reason.split(":")[0]
                self.retries[kind] = self.retries.get(kind, 0) + 1
                if failure.retry_after is not None:
                    delay = self.retry.honour(failure.retry_after, self._rng)
                else:
                    delay = self.retry.backoff(attempt, self._rng)
                log.warning(
                    "%s: %s; retrying in %.1f s (attempt %d of %d)",
                    self.api_url,
                    failure.reason,
                    delay,
                    attempt + 1,
                    self.retry.attempts,
                )
                await self._sleep(delay)
            except ApiError as exc:
                lost_session = exc.code in ("assertuserfailed", "assertbotfailed")
                if not lost_session or relogged or self._login is None:
                    raise
                relogged = True
                log.warning("%s: the session was lost; logging in again", self.api_url)
                await self._login_unlocked()

    async def _attempt(self, method: str, params: Mapping[str, str]) -> dict[str, Any]:
        query = {"format": "json", "formatversion": "2", **params}
        if self.maxlag is not None:
            query.setdefault("maxlag", str(self.maxlag))
        if self.logged_in_as is not None:
            query.setdefault("assert", "user")  # a lost session fails instead of going anon
        self.requests += 1
        if log.isEnabledFor(logging.DEBUG):
            shown = {k: v for k, v in query.items() if "pass" not in k and "token" not in k}
            log.debug("%s %s %s", method, self.api_url, shown)
        try:
            status, retry_after, body = await self._fetch(method, query)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Retry(f"network: {type(exc).__name__}: {exc}") from None
        if status in _RETRY_STATUSES:
            # Retry-After is honoured on 429 and 503 (what it is meant for).
            raise _Retry(f"HTTP {status}", retry_after if status in (429, 503) else None)
        if status >= 300:
            raise ApiError(f"http{status}", f"HTTP {status} from {self.api_url}")
        try:
            data = json.loads(body)
        except ValueError:  # UnicodeDecodeError too
            raise _Retry("not JSON: the wiki answered with something else") from None
        except RecursionError:  # nested deeper than the parser's stack: not a wiki's answer
            raise ApiError("badanswer", f"{self.api_url}: JSON nested too deeply") from None
        if not isinstance(data, dict):
            raise _Retry("not a JSON object")
        error = data.get("error")
        if isinstance(error, dict):
            code = str(error.get("code", "unknown"))[:100]  # bounded: it ends up in logs
            info = str(error.get("info", ""))[:500]
            if code in _TRANSIENT_CODES or code.startswith("internal_api_error"):
                if code == "maxlag" and retry_after is None:
                    retry_after = 5.0  # MediaWiki sends Retry-After with maxlag; be safe
                raise _Retry(f"{code}: {info}"[:200], retry_after if code == "maxlag" else None)
            raise ApiError(code, info)
        warnings = data.get("warnings")
        if isinstance(warnings, dict) and log.isEnabledFor(logging.DEBUG):
            for module, warning in warnings.items():
                log.debug("%s: API warning from %s: %.500s", self.api_url, module, warning)
        return data

    async def _fetch(
        self, method: str, query: Mapping[str, str]
    ) -> tuple[int, float | None, bytes]:
        """One request: (status, Retry-After, body); the body only of a 2xx answer.

        Redirects are followed here, not by aiohttp: aiohttp would re-post the
        body (a bot password) on 307/308 and send the cookie jar's cookies to
        any host that matches them, whatever the port or scheme.  So only
        redirects within the API's origin are followed, at most
        ``max_redirects`` of them; any other is an `ApiError` naming both origins.
        """
        url = URL(self.api_url)
        home = origin(url)
        params: Mapping[str, str] | None = query
        for _hop in range(self.limits.max_redirects + 1):
            http = self._http()
            if method == "GET":
                request = http.get(url, params=params, allow_redirects=False)
            else:
                request = http.post(url, data=query, allow_redirects=False)
            async with request as response:
                status = response.status
                location = response.headers.get("Location")
                if status in _REDIRECTS and location:
                    try:
                        target = url.join(URL(location))
                    except ValueError:
                        raise ApiError(
                            "redirect", f"{self.api_url}: HTTP {status} to an unreadable Location"
                        ) from None
                    if origin(target) != home:
                        raise ApiError(
                            "crossorigin",
                            f"{self.api_url}: redirected from {_shown_origin(url)} to "
                            f"{_shown_origin(target)}; not followed, so that no credential "
                            "or cookie leaves the wiki's origin (give the final api.php URL)",
                        )
                    if method == "POST" and status not in _REDIRECTS_KEEPING_BODY:
                        raise ApiError(
                            "redirect",
                            f"{self.api_url}: a POST was redirected with HTTP {status}, "
                            "which drops its body (give the final api.php URL)",
                        )
                    log.debug("%s: HTTP %d to %s", self.api_url, status, target)
                    url, params = target, None  # the Location carries its own query
                    continue
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if not 200 <= status < 300:
                    return status, retry_after, b""
                return status, retry_after, await self._read_capped(response)
        raise ApiError(
            "redirects",
            f"{self.api_url}: more than {self.limits.max_redirects} redirects (max_redirects)",
        )

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        """The body, read in chunks, refused as soon as it passes ``max_response_bytes``."""
        cap = self.limits.max_response_bytes
        declared = response.content_length
        body = bytearray()
        if declared is None or declared <= cap:
            async for chunk in response.content.iter_chunked(_CHUNK):
                body += chunk
                if len(body) > cap:
                    break
            else:
                return bytes(body)
        response.close()  # drop the connection: the rest is never read
        raise ApiError(
            "toolarge",
            f"{self.api_url}: the answer is larger than {cap} bytes (max_response_bytes)",
        )

    # -- sessions -----------------------------------------------------------------------

    async def login(self, user: str, password: str) -> None:
        """Log in with a bot password (``Name@appid`` and its password)."""
        async with self._lock:
            self._login = (user, password)
            await self._login_unlocked()

    async def _login_unlocked(self) -> None:
        assert self._login is not None
        user, password = self._login
        self.logged_in_as = None
        token = await self._token_unlocked("login")
        answer = await self._with_retries(
            "POST", {"action": "login", "lgname": user, "lgpassword": password, "lgtoken": token}
        )
        result = answer.get("login") or {}
        if result.get("result") != "Success":
            reason = result.get("reason") or result.get("result") or "refused"
            raise ApiError("loginfailed", f"login as {user} failed: {reason}")
        self.logged_in_as = str(result.get("lgusername", user))

    async def _token_unlocked(self, kind: str) -> str:
        data = await self._with_retries("GET", {"action": "query", "meta": "tokens", "type": kind})
        try:
            return str(data["query"]["tokens"][f"{kind}token"])
        except (KeyError, TypeError):
            raise ApiError("badtoken", f"no {kind} token in the answer") from None

    async def token(self, kind: str = "csrf") -> str:
        async with self._lock:
            return await self._token_unlocked(kind)

    async def write(self, params: Mapping[str, str]) -> dict[str, Any]:
        """A write action (``edit``, ``move``...) with a fresh CSRF token."""
        async with self._lock:
            token = await self._token_unlocked("csrf")
            return await self._with_retries("POST", {**params, "token": token})
