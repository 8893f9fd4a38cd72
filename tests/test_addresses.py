"""is_public_address: only addresses on the public internet, however an IPv6 form wraps an IPv4 one."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.addresses import is_public_address

PUBLIC = [
    ("1.1.1.1", "v4-cloudflare"),
    ("8.8.8.8", "v4-google"),
    ("100.63.255.255", "v4-just-below-cgnat"),
    ("100.128.0.0", "v4-just-above-cgnat"),
    ("172.15.255.255", "v4-just-below-172.16/12"),
    ("172.32.0.0", "v4-just-above-172.16/12"),
    ("198.17.255.255", "v4-just-below-benchmarking"),
    ("223.255.255.255", "v4-last-unicast"),
    ("2606:4700::1111", "v6-cloudflare"),
    ("2001:200::1", "v6-just-above-2001::/23"),
    ("2001:4860:4860::8888", "v6-google"),
    ("::ffff:1.1.1.1", "mapped-public"),
    ("::ffff:0:1.1.1.1", "translated-public"),
    ("64:ff9b::1.1.1.1", "nat64-public"),
    ("2002:101:101::1", "6to4-public"),
    ("2001:0:4136:e378:8000:63bf:fefe:fefe", "teredo-public-client-1.1.1.1"),
]
NOT_PUBLIC = [
    ("0.0.0.0", "v4-unspecified"),
    ("0.1.2.3", "v4-this-network-0/8"),
    ("10.0.0.1", "v4-private-10/8"),
    ("10.255.255.255", "v4-private-10/8-end"),
    ("100.64.0.1", "v4-cgnat-100.64/10"),
    ("100.127.255.255", "v4-cgnat-end"),
    ("127.0.0.1", "v4-loopback"),
    ("127.3.4.5", "v4-loopback-127/8"),
    ("169.254.169.254", "v4-link-local-metadata"),
    ("169.254.0.1", "v4-link-local"),
    ("172.16.0.1", "v4-private-172.16/12"),
    ("172.31.255.255", "v4-private-172.16/12-end"),
    ("192.0.0.9", "v4-ietf-192.0.0/24"),
    ("192.0.0.170", "v4-nat64-discovery"),
    ("192.0.2.1", "v4-test-net-1"),
    ("192.88.99.1", "v4-6to4-relay-anycast"),
    ("192.168.1.1", "v4-private-192.168/16"),
    ("198.18.0.1", "v4-benchmarking-198.18/15"),
    ("198.19.255.255", "v4-benchmarking-end"),
    ("198.51.100.7", "v4-test-net-2"),
    ("203.0.113.9", "v4-test-net-3"),
    ("224.0.0.1", "v4-multicast-local"),
    ("224.0.1.1", "v4-multicast-global-scope"),
    ("239.255.255.250", "v4-multicast-ssdp"),
    ("240.0.0.1", "v4-reserved-240/4"),
    ("255.255.255.255", "v4-broadcast"),
    ("::", "v6-unspecified"),
    ("::1", "v6-loopback"),
    ("fc00::1", "v6-unique-local-fc00"),
    ("fd12:3456::1", "v6-unique-local-fd"),
    ("fe80::1", "v6-link-local"),
    ("fec0::1", "v6-site-local"),
    ("ff02::1", "v6-multicast-link"),
    ("ff0e::1", "v6-multicast-global-scope"),
    ("2001:db8::1", "v6-documentation"),
    ("3fff::1", "v6-documentation-3fff"),
    ("100::1", "v6-discard-100::/64"),
    ("5f00::1", "v6-srv6-sid"),
    ("4000::1", "v6-outside-2000::/3"),
    ("2001:2::1", "v6-benchmarking"),
    ("2001:20::1", "v6-orchid-v2"),
    # Inside 2000::/3 but IANA special-purpose (2001::/23, IETF protocol assignments): outside is_global.
    ("2001:100::1", "v6-ietf-protocol-assignments"),
    ("2001:1ff:ffff::1", "v6-ietf-protocol-assignments-end"),
    ("2001:1::1", "v6-pcp-anycast"),
    ("2001:3::1", "v6-amt"),
    ("2001:4:112::1", "v6-as112"),
    ("2001:10::1", "v6-orchid-deprecated"),
    ("2001:30::1", "v6-drone-remote-id"),
    ("100:0:0:1::1", "v6-dummy-prefix"),
    ("::ffff:127.0.0.1", "mapped-loopback"),
    ("::ffff:10.0.0.1", "mapped-private"),
    ("::ffff:169.254.169.254", "mapped-metadata"),
    ("::ffff:0:127.0.0.1", "translated-loopback"),
    ("::127.0.0.1", "compatible-loopback"),
    ("::10.0.0.1", "compatible-private"),
    ("::169.254.169.254", "compatible-metadata"),
    ("64:ff9b::127.0.0.1", "nat64-loopback"),
    ("64:ff9b::10.0.0.1", "nat64-private"),
    ("64:ff9b::169.254.169.254", "nat64-metadata"),
    ("64:ff9b:1::101:101", "nat64-local-use-always"),
    ("64:ff9b:1::7f00:1", "nat64-local-use-loopback"),
    ("2002:7f00:1::1", "6to4-loopback"),
    ("2002:a00:1::1", "6to4-private"),
    ("2002:a9fe:a9fe::1", "6to4-metadata"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "teredo-client-loopback"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "teredo-client-private"),
    ("2001:0:4136:e378:8000:63bf:5601:5601", "teredo-client-metadata"),
    ("2001:0:a00:1:8000:63bf:fefe:fefe", "teredo-server-private"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(text, True, id=name) for text, name in PUBLIC]
    + [pytest.param(text, False, id=name) for text, name in NOT_PUBLIC],
)
def test_is_public_address(text: str, expected: bool) -> None:
    assert is_public_address(ipaddress.ip_address(text)) is expected


ipv4s = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


@given(v4=ipv4s, low=st.integers(0, 2**80 - 1))
def test_ipv6_forms_are_judged_by_the_ipv4_they_carry(v4: ipaddress.IPv4Address, low: int) -> None:
    expected = is_public_address(v4)
    n = int(v4)
    forms = {
        "mapped": 0xFFFF << 32 | n,
        "translated": 0xFFFF << 48 | n,
        "compatible": n,
        "nat64": 0x0064FF9B << 96 | n,
        "6to4": 0x2002 << 112 | n << 80 | low,
    }
    for form, value in forms.items():
        assert is_public_address(ipaddress.IPv6Address(value)) is expected, form


@given(client=ipv4s)
def test_teredo_is_judged_by_its_client(client: ipaddress.IPv4Address) -> None:
    server = int(ipaddress.IPv4Address("65.54.227.120"))
    teredo = ipaddress.IPv6Address(
        0x20010000 << 96 | server << 64 | 0x800063BF << 32 | (~int(client) & 0xFFFFFFFF)
    )
    assert is_public_address(teredo) is is_public_address(client)


# Every IPv6 address outside 2000::/3: any top three bits but 001, then anything.
outside_global_unicast = st.builds(
    lambda top, rest: top << 125 | rest, st.sampled_from((0, 2, 3, 4, 5, 6, 7)), st.integers(0, 2**125 - 1)
)


@given(value=outside_global_unicast)
def test_outside_global_unicast_only_a_carried_public_ipv4_is_public(value: int) -> None:
    # IPv4-compatible, mapped, translated, NAT64
    carries_ipv4 = value >> 32 in (0, 0xFFFF, 0xFFFF0000, 0x0064FF9B << 64)
    expected = carries_ipv4 and is_public_address(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    assert is_public_address(ipaddress.IPv6Address(value)) is expected
