"""Which source addresses may send datagrams (``udp.allow``). Pure code.

A source is allowed when its address is in one of the configured networks,
IPv4 or IPv6. An IPv4 source seen through an IPv6 socket (``::ffff:a.b.c.d``)
is matched as the IPv4 address it is. The answer is cached per address text
(the same few wikis send all the traffic), in a bounded table, so the check
is one dict lookup on the hot path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The default ``udp.allow``: this machine only.
LOOPBACK = ("127.0.0.0/8", "::1/128")


def parse_network(text: str) -> IPNetwork:
    """``"10.0.0.0/8"``, ``"2001:db8::/32"`` or a single address; host bits are ignored.

    Raises ValueError for anything else.
    """
    return ipaddress.ip_network(text.strip(), strict=False)


def source_address(host: str) -> IPAddress | None:
    """The address of a datagram's source, IPv4-mapped IPv6 unwrapped; None if unparsable."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # drop an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class SourceAllowlist:
    """``allowed(host)``: whether datagrams from `host` (as the socket reports it) are taken."""

    __slots__ = ("_cache", "cache_size", "networks")

    def __init__(self, networks: Iterable[str | IPNetwork], *, cache_size: int = 4096) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            parse_network(n) if isinstance(n, str) else n for n in networks
        )
        self.cache_size = cache_size
        self._cache: dict[str, bool] = {}

    def allowed(self, host: str) -> bool:
        verdict = self._cache.get(host)
        if verdict is None:
            verdict = self.matches(host)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()  # bounded; the few real senders are back after one miss
            self._cache[host] = verdict
        return verdict

    def matches(self, host: str) -> bool:
        """The uncached check."""
        address = source_address(host)
        if address is None:
            return False
        return any(address in network for network in self.networks)
