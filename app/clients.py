"""Who a client is, for counting what one client may cause (rate limits, resolutions under way).

An IPv4 client is its address. An IPv6 client is its network of `ipv6_prefix` bits (a /64 by default): one
subscriber usually holds a whole /64, so counting full addresses would give one person 2^64 fresh limits.
"""

from __future__ import annotations

import functools
import ipaddress

DEFAULT_IPV6_PREFIX = 64


@functools.lru_cache(maxsize=4096)  # asked on every request: the same few proxies and clients
def client_key(address: str | None, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The key one client's counts share: the IPv4 address, the IPv6 network, or the text as given when it
    is no IP address (a Unix socket peer, a test client); "unknown" when there is none."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)
