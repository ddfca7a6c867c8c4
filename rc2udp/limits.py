"""How much a wiki's API may ask of rc2udp, and how hard rc2udp may ask of it.

The one place for these defaults: `rc2udp.config` (keys and validation),
`rc2udp.cli` (flags), `rc2udp.api` and `rc2udp.poll` all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The smallest response cap accepted: a siteinfo answer must fit.
MIN_RESPONSE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds rc2udp holds against a broken or hostile API, per wiki.

    Responsible for saying how much is too much; `ApiClient` enforces the
    HTTP ones (size, redirects), `WikiPoller` the paging ones.
    """

    #: An answer larger than this (after decompression) is refused while it is
    #: read; a real page of 5,000 changes with every rcprop is about 5 MiB.
    max_response_bytes: int = 16 * 1024 * 1024
    #: Same-origin redirects followed for one request (a redirect to another
    #: origin is never followed).
    max_redirects: int = 5
    #: Seconds between two continuation pages of one round (0 only if asked for).
    page_delay: float = 0.5
    #: Pages in one round at most; the next round (or the next run) continues.
    max_pages: int = 1000
    #: rcids one round remembers to send each change once even if the API
    #: repeats it (about 70 bytes each); past it the oldest are forgotten.
    round_memory: int = 500_000
