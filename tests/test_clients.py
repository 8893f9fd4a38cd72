"""client_key: one client per IPv4 address, per IPv6 network (a /64 unless configured)."""

from __future__ import annotations

import pytest

from app.clients import client_key


@pytest.mark.parametrize(
    ("address", "prefix", "key"),
    [
        ("203.0.113.7", 64, "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", 64, "2001:db8:1:3::/64"),
        ("2001:db8:1:2:aaaa::1", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2:aaaa::1", 128, "2001:db8:1:2:aaaa::1/128"),
        ("::ffff:203.0.113.7", 64, "203.0.113.7"),
        ("testclient", 64, "testclient"),
        (None, 64, "unknown"),
        ("", 64, "unknown"),
    ],
)
def test_client_key(address: str | None, prefix: int, key: str) -> None:
    assert client_key(address, prefix) == key


def test_the_default_is_a_64() -> None:
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
