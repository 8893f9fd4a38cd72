"""Which IP addresses are public: the only ones the network guard lets tobira connect to.

An address is public when it lies in space the internet routes to servers: not loopback, private,
link-local, shared (CGNAT), multicast, documentation, benchmarking or any other special-purpose block of the
IANA registries. IPv6 forms that carry an IPv4 address are judged by that address, so none of them is a
way round the IPv4 rules.
"""

from __future__ import annotations

import ipaddress

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# ipaddress's is_global lags behind the IANA registries (and differs between Python releases), so these
# are refused explicitly on top of it.
_V4_NOT_PUBLIC = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
# Only 2000::/3 is allocated for global unicast; inside it these are documentation, benchmarking and
# identifier (ORCHID) space, never a server's locator.
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_NOT_PUBLIC = tuple(
    ipaddress.IPv6Network(net)
    for net in ("2001:2::/48", "2001:10::/28", "2001:20::/28", "2001:db8::/32", "3fff::/20")
)
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public_address(ip: Address) -> bool:
    """True only for an address on the public internet that tobira may connect to.

    IPv6 forms that carry an IPv4 address (mapped, translated, compatible, NAT64 64:ff9b::/96, 6to4, Teredo)
    are judged by the IPv4 address they lead to. The local-use NAT64 prefix 64:ff9b:1::/48 is never public:
    where its IPv4 address sits depends on a local choice, and it lies outside 2000::/3 anyway.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_public_v4(ip)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return all(_is_public_v4(v4) for v4 in embedded)
    return (
        ip in _V6_GLOBAL_UNICAST
        and ip.is_global
        and not ip.is_multicast
        and not any(ip in net for net in _V6_NOT_PUBLIC)
    )


def _is_public_v4(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not ip.is_multicast and not any(ip in net for net in _V4_NOT_PUBLIC)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses that `ip` carries (for Teredo: its server and its client), or None."""
    if ip in _V4_MAPPED or ip in _V4_TRANSLATED or ip in _V4_COMPATIBLE or ip in _NAT64:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo  # (server, client); both must be public
    return None
