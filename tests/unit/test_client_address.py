"""The client address: the socket peer, unless the peer is a trusted proxy (collab/http/client_address.py)."""

from __future__ import annotations

import pytest

from collab.http.client_address import ClientAddressResolver

PROXIES = ClientAddressResolver(["10.0.0.0/8", "192.168.1.1", "fd00::/8"])


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    plain = ClientAddressResolver([])
    assert plain.resolve("203.0.113.7", ["198.51.100.1"]) == "203.0.113.7"
    assert not plain.trusts_proxies


def test_an_untrusted_peer_cannot_claim_another_address() -> None:
    assert PROXIES.resolve("203.0.113.7", ["198.51.100.1"]) == "203.0.113.7"


@pytest.mark.parametrize("header, expected", [
    (["198.51.100.1"], "198.51.100.1"),
    # The client's own claim (leftmost) is not believed: the rightmost untrusted hop is.
    (["1.2.3.4, 198.51.100.1"], "198.51.100.1"),
    (["1.2.3.4, 198.51.100.1, 10.1.2.3"], "198.51.100.1"),
    (["1.2.3.4", "198.51.100.1, 192.168.1.1"], "198.51.100.1"),  # several header lines are one list
    (["198.51.100.1:5123"], "198.51.100.1"),                      # ports are dropped
    (["[2001:db8::1]:443"], "2001:db8::1"),
    (["::ffff:198.51.100.1"], "198.51.100.1"),                    # IPv4-mapped is IPv4
    (["garbage, 10.9.9.9"], "10.9.9.9"),                          # stops at what it cannot read
    (["10.3.3.3, 10.2.2.2"], "10.3.3.3"),                         # all trusted: the leftmost
    ([""], "10.0.0.5"),
])
def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_wins(header: list[str], expected: str) -> None:
    assert PROXIES.resolve("10.0.0.5", header) == expected


def test_ipv6_proxies_and_non_ip_peers() -> None:
    assert PROXIES.resolve("fd00::1", ["2001:db8::7"]) == "2001:db8::7"
    assert PROXIES.resolve("unix:/run/collab.sock", ["198.51.100.1"]) == "unix:/run/collab.sock"
    assert PROXIES.resolve(None, []) is None
