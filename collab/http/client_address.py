"""The client's address: the socket peer, or X-Forwarded-For behind trusted proxies.

Without ``COLLAB_TRUSTED_PROXIES`` the address is the TCP peer, whatever
headers say: anyone can send ``X-Forwarded-For``. With it (a list of CIDRs),
a request whose peer is a trusted proxy is attributed to the rightmost
address of ``X-Forwarded-For`` that is *not* a trusted proxy: each proxy
appends the address it saw, so hops to the right were written by our own
proxies and the first untrusted one from the right is the client as the
outermost trusted proxy saw it. Entries to its left are the client's own
claims and are ignored. A malformed entry stops the walk at the last
trusted hop; a header made only of trusted proxies yields the leftmost one.

The result is used as a rate-limit key and recorded on sessions: it is
always a normalized IP address string (or the peer as given when the peer
is not an IP, e.g. a Unix socket), never raw header text.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_FORWARDED_HOPS = 32  # entries examined, from the right


class ClientAddressResolver:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)

    @property
    def trusts_proxies(self) -> bool:
        return bool(self._trusted)

    def _is_trusted(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: list[str]) -> str | None:
        """The client address for a request from ``peer`` with these X-Forwarded-For header values."""
        peer_ip = _parse(peer)
        if peer_ip is None:
            return peer or None
        if not self._trusted or not self._is_trusted(peer_ip) or not forwarded_for:
            return str(peer_ip)
        hops = [h.strip() for value in forwarded_for for h in value.split(",")]
        client = peer_ip
        for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
            address = _parse(hop)
            if address is None:
                break  # garbage: trust nothing further left
            client = address
            if not self._is_trusted(address):
                break
        return str(client)


def _parse(text: str | None) -> IPAddress | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
