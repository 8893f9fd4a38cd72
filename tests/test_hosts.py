"""The instance-input parser: what people type is accepted and canonicalised, every hostile spelling refused.

Look-alike names (a Cyrillic "i" in "misskey.io", full-width letters) are still valid domains: they are
accepted, but canonicalised to their own punycode host, which never equals the name they imitate.
"""

from __future__ import annotations

import ipaddress
import re
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import InvalidInstance
from app.hosts import DevOrigin, Instance, canonical_host, host_matches, parse_dev_origin, parse_instance

CANONICAL = re.compile(r"[a-z0-9.-]+")
FULLWIDTH_MISSKEY_IO = "\uff4d\uff49\uff53\uff53\uff4b\uff45\uff59\uff0e\uff49\uff4f"
# Our own list, kept apart from the module's, so a name dropped there is caught here.
RESERVED_SUFFIXES = (
    "localhost local localdomain internal intranet lan home corp mail private onion i2p test example invalid "
    "arpa alt home.arpa example.com example.net example.org"
).split()


def inet_aton_reads(text: str) -> bool:
    """Whether BSD/glibc inet_aton (and WHATWG URL parsing) would read `text` as an IPv4 address."""
    parts = text.removesuffix(".").split(".")
    if not 1 <= len(parts) <= 4:
        return False
    values = []
    for part in parts:
        if re.fullmatch(r"0[xX][0-9a-fA-F]*", part):
            values.append(int(part[2:] or "0", 16))
        elif re.fullmatch(r"0[0-7]*", part):
            values.append(int(part, 8))
        elif re.fullmatch(r"[1-9][0-9]*", part):
            values.append(int(part))
        else:
            return False
    *head, last = values
    return all(v < 256 for v in head) and last < 256 ** (5 - len(values))


def assert_public_host(host: str) -> None:
    """Everything a canonical public host promises."""
    assert CANONICAL.fullmatch(host), host
    assert 3 <= len(host) <= 253
    assert "." in host and "" not in host.split(".")
    with pytest.raises(ValueError):
        ipaddress.ip_address(host)
    with pytest.raises(OSError):
        socket.inet_aton(host)
    assert not inet_aton_reads(host)
    assert not re.fullmatch(r"[0-9]+|0x[0-9a-f]*", host.rsplit(".", 1)[1])  # WHATWG "ends in a number"
    assert not any(host == s or host.endswith("." + s) for s in RESERVED_SUFFIXES)


def refused(text: str, dev_origins: tuple[DevOrigin, ...] = ()) -> InvalidInstance:
    with pytest.raises(InvalidInstance) as caught:
        parse_instance(text, dev_origins)
    return caught.value


# --- accepted public input ------------------------------------------------------------------------------

ACCEPTED = [
    ("bare", "misskey.io", "misskey.io"),
    ("https-slash", "https://misskey.io/", "misskey.io"),
    ("https-no-slash", "https://misskey.io", "misskey.io"),
    ("upper", "MISSKEY.IO", "misskey.io"),
    ("upper-scheme", "HTTPS://Misskey.IO/", "misskey.io"),
    ("trailing-dot", "misskey.io.", "misskey.io"),
    ("trailing-dot-url", "https://misskey.io./", "misskey.io"),
    ("handle", "@alice@misskey.io", "misskey.io"),
    ("handle-no-at", "alice@misskey.io", "misskey.io"),
    ("handle-underscore-digits", "@Alice_01@misskey.io", "misskey.io"),
    ("handle-port", "@alice@misskey.io:443", "misskey.io"),
    ("profile-url", "https://misskey.io/@alice", "misskey.io"),
    ("profile-url-slash", "https://misskey.io/@alice/", "misskey.io"),
    ("profile-no-scheme", "misskey.io/@alice", "misskey.io"),
    ("profile-same-host", "https://misskey.io/@alice@misskey.io", "misskey.io"),
    ("profile-same-host-spelt", "misskey.io/@alice@MISSKEY.IO.", "misskey.io"),
    ("slash", "misskey.io/", "misskey.io"),
    ("port-443", "misskey.io:443", "misskey.io"),
    ("url-port-443", "https://misskey.io:443/", "misskey.io"),
    ("port-443-zero-padded", "https://misskey.io:0443", "misskey.io"),
    ("spaces-around", "  misskey.io  ", "misskey.io"),
    ("tab-newline-around", "\tmisskey.io\r\n", "misskey.io"),
    ("ideographic-space-around", "\u3000misskey.io\u3000", "misskey.io"),
    ("subdomain", "social.sub.misskey.io", "social.sub.misskey.io"),
    ("short", "a.io", "a.io"),
    ("hyphen-cctld", "misskey-dev.co.uk", "misskey-dev.co.uk"),
    ("digit-labels-not-final", "123.0x7f.misskey.io", "123.0x7f.misskey.io"),
    ("reserved-word-not-final", "localhost.misskey.io", "localhost.misskey.io"),
    ("label-63", "a" * 63 + ".io", "a" * 63 + ".io"),
    ("name-253", ("a" * 61 + ".") * 4 + "ab.io", ("a" * 61 + ".") * 4 + "ab.io"),
    ("idn-japanese", "\u307f\u3059\u304d\u30fc.jp", "xn--w8jxa7itv.jp"),
    ("idn-profile-url", "https://\u307f\u3059\u304d\u30fc.jp/@alice", "xn--w8jxa7itv.jp"),
    ("idn-handle", "@alice@\u307f\u3059\u304d\u30fc.jp", "xn--w8jxa7itv.jp"),
    ("idn-cyrillic-tld", "\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444", "xn--e1afmkfd.xn--p1ai"),
    ("idn-eszett-nontransitional", "Stra\u00dfe.de", "xn--strae-oqa.de"),
    ("idn-persian-zwnj", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.ir", "xn--mgbn2ecje63gr19l.ir"),
    ("idn-hebrew-rtl", "\u05de\u05e7\u05d5\u05e8.\u05e7\u05d5\u05dd", "xn--9dbr1af.xn--9dbq2a"),
    ("punycode-input", "xn--w8jxa7itv.jp", "xn--w8jxa7itv.jp"),
    ("punycode-upper", "XN--W8JXA7ITV.JP", "xn--w8jxa7itv.jp"),
    ("fullwidth-letters", FULLWIDTH_MISSKEY_IO, "misskey.io"),
    ("ideographic-full-stop", "misskey\u3002io", "misskey.io"),
    # A homograph is a different, valid domain: accepted as itself, never as the name it imitates.
    ("homograph-cyrillic-i", "m\u0456sskey.io", "xn--msskey-pvf.io"),
    ("homograph-greek-omicron", "misskey.i\u03bf", "misskey.xn--i-smb"),
    ("longest-input", "@" + "a" * 1012 + "@misskey.io", "misskey.io"),
]


@pytest.mark.parametrize(("text", "host"), [pytest.param(t, h, id=i) for i, t, h in ACCEPTED])
def test_accepted(text: str, host: str) -> None:
    instance = parse_instance(text)
    assert instance == Instance(host=host, origin=f"https://{host}", dev=False)
    assert canonical_host(text) == host
    assert_public_host(host)


def test_homograph_never_equals_the_original() -> None:
    assert canonical_host("m\u0456sskey.io") != canonical_host("misskey.io")
    assert not host_matches(canonical_host("m\u0456sskey.io"), ["misskey.io"])


def test_url_joins_origin_and_path() -> None:
    instance = parse_instance("misskey.io")
    assert instance.url("/api/i") == "https://misskey.io/api/i"
    assert instance.url("/miauth/abc?name=x") == "https://misskey.io/miauth/abc?name=x"
    with pytest.raises(ValueError, match=r"^an instance path must start with '/'$"):
        instance.url("api/i")
    with pytest.raises(ValueError, match="must start with '/'"):
        instance.url("@evil.com/")


# --- refused public input -------------------------------------------------------------------------------

REFUSED = [
    # IPv4 in every spelling
    ("ipv4-dotted", "127.0.0.1"),
    ("ipv4-dotted-url", "https://127.0.0.1/"),
    ("ipv4-dotted-port", "127.0.0.1:443"),
    ("ipv4-decimal", "2130706433"),
    ("ipv4-decimal-url", "https://2130706433/"),
    ("ipv4-hex", "0x7f000001"),
    ("ipv4-hex-upper", "0X7F000001"),
    ("ipv4-hex-dotted", "0x7f.0.0.1"),
    ("ipv4-hex-every-part", "0x7f.0x0.0x0.0x1"),
    ("ipv4-hex-last-part", "1.0x7f"),
    ("ipv4-hex-bare-prefix", "127.0.0.0x"),
    ("ipv4-octal", "0177.0.0.1"),
    ("ipv4-octal-whole", "017700000001"),
    ("ipv4-short-127.1", "127.1"),
    ("ipv4-short-10.1", "10.1"),
    ("ipv4-three-parts", "127.0.1"),
    ("ipv4-trailing-dot", "127.0.0.1."),
    ("ipv4-fullwidth", "\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11"),
    ("ipv4-ideographic-dots", "127\u30020\u30020\u30021"),
    ("ipv4-metadata", "169.254.169.254"),
    ("ipv4-any", "0.0.0.0"),
    ("ipv4-zero", "0"),
    ("ipv4-handle", "@alice@127.0.0.1"),
    ("ipv4-profile", "https://127.0.0.1/@alice"),
    ("numeric-tld", "misskey.123"),
    # IPv6 in every spelling
    ("ipv6-bracketed", "[::1]"),
    ("ipv6-bare", "::1"),
    ("ipv6-url", "https://[::1]/"),
    ("ipv6-url-port", "https://[::1]:443/"),
    ("ipv6-full", "[0:0:0:0:0:0:0:1]"),
    ("ipv6-mapped-ipv4", "[::ffff:127.0.0.1]"),
    ("ipv6-mapped-ipv4-bare", "::ffff:127.0.0.1"),
    ("ipv6-zone-encoded", "[fe80::1%25eth0]"),
    ("ipv6-zone-raw", "[fe80::1%eth0]"),
    ("ipv6-unclosed", "[::1"),
    ("ipv6-aws-metadata", "[fd00:ec2::254]"),
    # localhost, special-use and never-delegated names
    ("localhost", "localhost"),
    ("localhost-upper", "LOCALHOST"),
    ("localhost-trailing-dot", "localhost."),
    ("localhost-port", "localhost:443"),
    ("localhost-url", "https://localhost/"),
    ("localhost-subdomain", "misskey.localhost"),
    ("localhost-fullwidth", "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54"),
    ("mdns-local", "misskey.local"),
    ("localdomain", "host.localdomain"),
    ("internal", "metadata.google.internal"),
    ("onion", "misskey.onion"),
    ("i2p", "misskey.i2p"),
    ("test", "standin.test"),
    ("example-tld", "misskey.example"),
    ("invalid", "misskey.invalid"),
    ("home-arpa", "router.home.arpa"),
    ("in-addr-arpa", "1.0.0.127.in-addr.arpa"),
    ("alt", "misskey.alt"),
    ("lan", "nas.lan"),
    ("intranet", "wiki.intranet"),
    ("corp", "misskey.corp"),
    ("home", "misskey.home"),
    ("mail", "misskey.mail"),
    ("private", "misskey.private"),
    ("example-com", "example.com"),
    ("example-com-subdomain", "misskey.example.com"),
    ("example-net", "example.net"),
    ("example-org-subdomain", "www.example.org"),
    ("single-label", "misskey"),
    ("single-label-metadata", "metadata"),
    ("single-label-url", "https://misskey/"),
    # userinfo and handle tricks
    ("userinfo", "https://alice@misskey.io"),
    ("userinfo-password", "https://alice:pw@misskey.io/"),
    ("userinfo-empty", "https://@misskey.io"),
    ("userinfo-points-elsewhere", "https://misskey.io@evil.com"),
    ("userinfo-no-scheme-password", "alice:pw@misskey.io"),
    ("userinfo-handle-in-url", "https://@alice@misskey.io"),
    ("handle-with-path", "@alice@misskey.io/"),
    ("handle-double-at", "@@alice@misskey.io"),
    ("handle-empty-user", "@@misskey.io"),
    ("handle-three-parts", "@a@b@misskey.io"),
    ("handle-hyphen-user", "@al-ice@misskey.io"),
    ("handle-no-host", "@alice"),
    ("handle-empty-host", "@alice@"),
    # parser differentials: what urllib and browsers read differently
    ("backslash-userinfo", "https://evil.com\\@misskey.io"),
    ("backslash-after-host", "https://misskey.io\\@evil.com"),
    ("backslash-slashes", "https:\\\\misskey.io"),
    ("fragment-at", "https://misskey.io#@evil.com"),
    ("query-at", "https://misskey.io?@evil.com"),
    ("query", "https://misskey.io/?a=b"),
    ("fragment", "misskey.io#top"),
    ("percent-slash", "https://misskey.io%2f@evil.com"),
    ("percent-encoded-host", "https://%6Disskey.io"),
    ("percent-dot", "misskey%2eio"),
    ("scheme-relative", "//misskey.io"),
    ("triple-slash", "https:///misskey.io"),
    ("scheme-no-slashes", "https:misskey.io"),
    ("double-scheme", "https://https://misskey.io"),
    ("fullwidth-slash", "misskey.io\uff0f@alice"),
    ("fullwidth-colon-port", "misskey.io\uff1a443"),
    # schemes
    ("http", "http://misskey.io"),
    ("http-upper", "HTTP://misskey.io/"),
    ("ftp", "ftp://misskey.io"),
    ("wss", "wss://misskey.io"),
    ("javascript", "javascript:alert(1)"),
    ("javascript-slashes", "javascript://misskey.io/%0aalert(1)"),
    ("file", "file:///etc/passwd"),
    ("data", "data:text/html,hi"),
    # ports
    ("port-80", "misskey.io:80"),
    ("port-8443", "https://misskey.io:8443/"),
    ("port-empty", "misskey.io:"),
    ("port-zero", "misskey.io:0"),
    ("port-too-big", "misskey.io:99999"),
    ("port-wraps-to-443", "misskey.io:65979"),
    ("port-too-many-digits", "misskey.io:000000443"),
    ("port-fullwidth-digits", "misskey.io:\uff14\uff14\uff13"),
    ("port-plus", "misskey.io:+443"),
    ("port-twice", "misskey.io:443:443"),
    ("port-only", ":443"),
    # paths
    ("path", "https://misskey.io/about"),
    ("path-api", "misskey.io/api/i"),
    ("path-double-slash", "https://misskey.io//"),
    ("path-dotdot", "https://misskey.io/@alice/.."),
    ("path-note", "https://misskey.io/notes/9abc"),
    ("path-below-profile", "https://misskey.io/@alice/followers"),
    ("path-empty-user", "https://misskey.io/@"),
    ("path-semicolon", "https://misskey.io/;x"),
    ("path-remote-profile", "https://misskey.io/@alice@evil.com"),
    ("path-remote-profile-ip", "https://misskey.io/@alice@127.0.0.1"),
    ("path-remote-profile-port", "https://misskey.io/@alice@misskey.io:8443"),
    # characters
    ("empty", ""),
    ("only-spaces", "   "),
    ("space-inside", "miss key.io"),
    ("tab-inside", "misskey\t.io"),
    ("crlf-header-injection", "misskey.io\r\nX-Evil: 1"),
    ("nul-inside", "misskey.io\x00.evil.com"),
    ("nul-end", "misskey.io\x00"),
    ("del", "misskey.io\x7f"),
    ("c1-next-line-inside", "miss\x85key.io"),
    ("nbsp-inside", "misskey\u00a0.io"),
    ("zero-width-space", "miss\u200bkey.io"),
    ("zero-width-joiner-latin", "miss\u200dkey.io"),
    ("soft-hyphen", "mis\u00adskey.io"),
    ("byte-order-mark", "\ufeffmisskey.io"),
    ("rtl-override", "misskey\u202e.io"),
    ("lone-surrogate", "misskey\ud800.io"),
    ("private-use", "misskey\ue000.io"),
    ("too-long-input", "a" * 2000 + ".io"),
    # labels and lengths
    ("empty-label", "a..misskey.io"),
    ("leading-dot", ".misskey.io"),
    ("two-trailing-dots", "misskey.io.."),
    ("only-dot", "."),
    ("label-64", "a" * 64 + ".io"),
    ("name-254", ("a" * 61 + ".") * 4 + "abc.io"),
    ("leading-hyphen", "-misskey.io"),
    ("trailing-hyphen", "misskey-.io"),
    ("hyphens-3-4", "mi--sskey.io"),
    ("underscore", "mis_skey.io"),
    ("underscore-srv", "_misskey._tcp.misskey.io"),
    ("punycode-invalid", "xn--zz.io"),
    ("punycode-trailing-hyphen", "xn--abc-.io"),
    ("tld-hyphen", "misskey.i-o"),
    ("tld-one-letter", "misskey.i"),
    ("wildcard", "*.misskey.io"),
    ("symbol", "miss*key.io"),
    ("angle-brackets", "misskey.io<script>"),
    ("quotes", '"misskey.io"'),
    ("emoji-idna2003-only", "\U0001f4a9.io"),
    ("snowman-idna2003-only", "\u2603.net"),
    ("bidi-mixed-label", "a\u05d0.io"),
]


@pytest.mark.parametrize("text", [pytest.param(t, id=i) for i, t in REFUSED])
def test_refused(text: str) -> None:
    error = refused(text)
    assert error.status == 400
    assert error.code == "INVALID_INSTANCE"
    # One of a fixed set of human messages, so never an echo of the input or its control characters.
    assert error.message in {message for _, _, message in MESSAGES}
    with pytest.raises(InvalidInstance):
        canonical_host(text)


def test_refused_table_is_big_and_unique() -> None:
    assert len(REFUSED) >= 80
    assert len({i for i, _ in REFUSED}) == len(REFUSED)
    assert len({t for _, t in REFUSED}) == len(REFUSED)


MESSAGES = [
    ("empty", "", "Type the name of your Misskey server, for example misskey.io."),
    ("http", "http://misskey.io", "tobira only connects to servers over https, not plain http."),
    ("ftp", "ftp://misskey.io", "Only https:// addresses can be used."),
    ("ip", "127.0.0.1", "Type the server's name, not an IP address."),
    ("ipv6", "[::1]", "Type the server's name, not an IP address."),
    ("decimal-ip", "2130706433", "Type the server's name, not an IP address."),
    ("port", "misskey.io:8443", "tobira only connects to servers on the standard https port (443)."),
    ("reserved", "localhost", "That name is reserved for local or special use; it is not a public server."),
    ("single-label", "misskey", "A server name has at least one dot, as in misskey.io."),
    (
        "userinfo",
        "https://a@misskey.io",
        "An address with a user name or password before the server name cannot be used.",
    ),
    ("handle", "@a-b@misskey.io", "A handle looks like @alice@misskey.io."),
    (
        "path",
        "misskey.io/about",
        "Type just the server name, or a profile address such as https://misskey.io/@alice.",
    ),
    (
        "remote-profile",
        "misskey.io/@a@mastodon.social",
        "That profile is on another server: type the name of your own server.",
    ),
    ("query", "misskey.io?x", "Type just the server name, without a '?' or '#' part."),
    ("control", "miss\x00key.io", "A server name cannot contain spaces, control characters or backslashes."),
    ("percent", "misskey%2eio", "A server name cannot contain percent-encoded characters."),
    ("idna", "mis_skey.io", "That is not a valid server name."),
    ("too-long", "a" * 1025, "That is too long to be a server name."),
    ("fragment", "misskey.io#top", "Type just the server name, without a '?' or '#' part."),
    ("backslash", "misskey.io\\x", "A server name cannot contain spaces, control characters or backslashes."),
    ("ipv6-unbracketed", "fe80::1", "Type the server's name, not an IP address."),
    ("ipv6-two-colons", "::1", "Type the server's name, not an IP address."),
    ("bracketed-ipv4", "[1.2.3.4]", "Type the server's name, not an IP address."),
    (
        "port-out-of-range",
        "misskey.io:99999",
        "tobira only connects to servers on the standard https port (443).",
    ),
    ("port-not-a-number", "misskey.io:abc", "That is not a valid server name."),
]


@pytest.mark.parametrize(("text", "message"), [pytest.param(t, m, id=i) for i, t, m in MESSAGES])
def test_refusal_message(text: str, message: str) -> None:
    assert refused(text).message == message


# --- dev origins ----------------------------------------------------------------------------------------

DEV_ORIGIN_TEXTS = (
    "http://127.0.0.1:3000",
    "http://localhost:3000",
    "https://standin.test:8443",
    "http://[::1]:3001",
    "https://standin.example",
    "http://misskey",
    "http://kube.local:3000",
)
DEV = tuple(parse_dev_origin(o) for o in DEV_ORIGIN_TEXTS)
DEV_INSTANCES = {parse_instance(o, DEV) for o in DEV_ORIGIN_TEXTS}

DEV_ACCEPTED = [
    ("ip-exact", "http://127.0.0.1:3000", "127.0.0.1:3000", "http://127.0.0.1:3000"),
    ("ip-slash", "http://127.0.0.1:3000/", "127.0.0.1:3000", "http://127.0.0.1:3000"),
    ("ip-profile", "HTTP://127.0.0.1:3000/@alice", "127.0.0.1:3000", "http://127.0.0.1:3000"),
    ("ip-profile-same-host", "http://127.0.0.1:3000/@alice@127.0.0.1:3000", "127.0.0.1:3000", "http://127.0.0.1:3000"),
    ("ip-hostport", "127.0.0.1:3000", "127.0.0.1:3000", "http://127.0.0.1:3000"),
    ("ip-hostport-spaces", "  127.0.0.1:3000/ ", "127.0.0.1:3000", "http://127.0.0.1:3000"),
    ("ip-handle", "@alice@127.0.0.1:3000", "127.0.0.1:3000", "http://127.0.0.1:3000"),
    ("localhost-upper", "http://LOCALHOST:3000", "localhost:3000", "http://localhost:3000"),
    ("localhost-hostport", "localhost:3000", "localhost:3000", "http://localhost:3000"),
    ("test-https", "https://standin.test:8443", "standin.test:8443", "https://standin.test:8443"),
    ("test-hostport", "Standin.Test:8443", "standin.test:8443", "https://standin.test:8443"),
    ("ipv6", "http://[::1]:3001", "[::1]:3001", "http://[::1]:3001"),
    ("ipv6-hostport", "[::1]:3001/", "[::1]:3001", "http://[::1]:3001"),
    ("default-port-omitted", "https://standin.example", "standin.example", "https://standin.example"),
    ("default-port-written", "https://standin.example:443/", "standin.example", "https://standin.example"),
    ("default-port-bare-host", "standin.example", "standin.example", "https://standin.example"),
    ("single-label-dev", "http://misskey", "misskey", "http://misskey"),
    ("single-label-dev-bare", "misskey", "misskey", "http://misskey"),
    ("single-label-dev-port", "misskey:80", "misskey", "http://misskey"),
    ("public-still-works", "misskey.io", "misskey.io", "https://misskey.io"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "host", "origin"), [pytest.param(t, h, o, id=i) for i, t, h, o in DEV_ACCEPTED]
)
def test_dev_accepted(text: str, host: str, origin: str) -> None:
    instance = parse_instance(text, DEV)
    assert instance == Instance(host=host, origin=origin, dev=host != "misskey.io")
    # What /session reports as `instance` leads back to the same instance.
    assert parse_instance(instance.host, DEV) == instance


def test_dev_instances() -> None:
    assert {(i.origin, i.dev) for i in DEV_INSTANCES} == {
        ("http://127.0.0.1:3000", True),
        ("http://localhost:3000", True),
        ("https://standin.test:8443", True),
        ("http://[::1]:3001", True),
        ("https://standin.example", True),
        ("http://misskey", True),
        ("http://kube.local:3000", True),
    }
    assert parse_instance("localhost:3000", DEV).url("/api/i") == "http://localhost:3000/api/i"


DEV_REFUSED = [
    ("short-ip", "127.1:3000"),
    ("other-port", "http://127.0.0.1:3001"),
    ("other-scheme", "https://127.0.0.1:3000"),
    ("no-port", "http://127.0.0.1"),
    ("bare-ip", "127.0.0.1"),
    ("decimal-ip", "http://2130706433:3000"),
    ("hex-ip", "http://0x7f000001:3000"),
    ("leading-zero-ip", "http://127.0.0.01:3000"),
    ("trailing-dot", "http://localhost.:3000"),
    ("zero-padded-port", "http://localhost:03000"),
    ("bare-localhost", "localhost"),
    ("localhost-other-port", "localhost:3001"),
    ("fullwidth-localhost", "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:3000"),
    ("fullwidth-scheme", "\uff48ttp://127.0.0.1:3000"),
    ("kelvin-sign", "\u212aube.local:3000"),
    ("userinfo", "http://alice@127.0.0.1:3000"),
    ("path", "http://127.0.0.1:3000/admin"),
    ("double-slash", "http://127.0.0.1:3000//"),
    ("remote-profile", "http://127.0.0.1:3000/@alice@misskey.io"),
    ("query", "http://127.0.0.1:3000?x"),
    ("fragment", "http://127.0.0.1:3000#"),
    ("backslash", "http://127.0.0.1:3000\\@evil.com"),
    ("ipv6-other-port", "http://[::1]:3000"),
    ("ipv6-other-spelling", "http://[0:0:0:0:0:0:0:1]:3001"),
    ("ipv6-mapped", "http://[::ffff:127.0.0.1]:3000"),
    ("ipv6-unbracketed", "::1:3001"),
    ("test-without-port", "standin.test"),
    ("test-other-scheme", "http://standin.test:8443"),
    ("example-other-scheme", "http://standin.example"),
    ("single-label-other-scheme", "https://misskey"),
    ("single-label-other-port", "misskey:3000"),
]


@pytest.mark.parametrize("text", [pytest.param(t, id=i) for i, t in DEV_REFUSED])
def test_dev_refused(text: str) -> None:
    refused(text, DEV)


def test_dev_origins_are_never_implied() -> None:
    for text in ("http://127.0.0.1:3000", "127.0.0.1:3000", "localhost:3000", "https://standin.test:8443"):
        refused(text)


# --- parse_dev_origin -----------------------------------------------------------------------------------

NAME_253 = ("a" * 61 + ".") * 4 + "ab.io"
DEV_ORIGINS = [
    ("ip", "http://127.0.0.1:3000", DevOrigin("http", "127.0.0.1", 3000)),
    ("spaces-and-slash", "  http://127.0.0.1:3000/  ", DevOrigin("http", "127.0.0.1", 3000)),
    ("upper", "HTTPS://Standin.Test:8443", DevOrigin("https", "standin.test", 8443)),
    ("http-default-port", "http://localhost", DevOrigin("http", "localhost", 80)),
    ("https-default-port", "https://standin.test", DevOrigin("https", "standin.test", 443)),
    ("ipv6", "http://[::1]:3000", DevOrigin("http", "::1", 3000)),
    ("ipv6-upper", "http://[FE80::1]:3000", DevOrigin("http", "fe80::1", 3000)),
    ("single-label", "http://misskey:3000", DevOrigin("http", "misskey", 3000)),
    ("max-port", "http://10.0.0.5:65535", DevOrigin("http", "10.0.0.5", 65535)),
    ("min-port", "http://10.0.0.5:1", DevOrigin("http", "10.0.0.5", 1)),
    ("upper-x", "http://DEV-X.test:3000", DevOrigin("http", "dev-x.test", 3000)),
    ("name-253", "http://" + NAME_253 + ":3000", DevOrigin("http", NAME_253, 3000)),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, e, id=i) for i, t, e in DEV_ORIGINS])
def test_parse_dev_origin(text: str, expected: DevOrigin) -> None:
    assert parse_dev_origin(text) == expected


DEV_ORIGINS_REFUSED = [
    ("no-scheme", "127.0.0.1:3000", "must start with http:// or https://"),
    ("ftp", "ftp://127.0.0.1:21", "must start with http:// or https://"),
    ("ws", "ws://127.0.0.1:3000", "must start with http:// or https://"),
    ("empty", "", "must start with http:// or https://"),
    ("path", "http://127.0.0.1:3000/path", "without path, query or user"),
    ("double-slash", "http://127.0.0.1:3000//", "without path, query or user"),
    ("slash-query", "http://127.0.0.1:3000/?q", "without path, query or user"),
    ("query", "http://127.0.0.1:3000?q", "without path, query or user"),
    ("fragment", "http://127.0.0.1:3000#f", "without path, query or user"),
    ("user", "http://user@127.0.0.1:3000", "without path, query or user"),
    ("user-password", "http://user:pw@127.0.0.1:3000", "without path, query or user"),
    ("zone-id", "http://[fe80::1%25eth0]:3000", "without path, query or user"),
    ("backslash", "http://host\\@x:3000", "without path, query or user"),
    ("space", "http://exa mple:3000", "without path, query or user"),
    ("no-host", "http://", "malformed host or port"),
    ("port-zero", "http://127.0.0.1:0", "malformed host or port"),
    ("port-too-big", "http://127.0.0.1:65536", "malformed host or port"),
    ("port-empty", "http://127.0.0.1:", "malformed host or port"),
    ("port-letters", "http://127.0.0.1:30a", "malformed host or port"),
    ("ipv6-unclosed", "http://[::1:3000", "malformed host or port"),
    ("ipv6-unbracketed", "http://::1:3000", "malformed host or port"),
    ("ipv6-invalid", "http://[not-v6]:3000", "invalid IPv6 address"),
    ("ipv6-two-brackets", "http://[::1]]:3000", "malformed host or port"),
    ("name-254", "http://a" + NAME_253 + ":3000", "the host must be"),
    ("short-ip", "http://127.1:3000", "the host must be"),
    ("hex-ip", "http://0x7f000001:3000", "the host must be"),
    ("decimal-ip", "http://2130706433:3000", "the host must be"),
    ("octal-ip", "http://0177.0.0.1:3000", "the host must be"),
    ("leading-zero-ip", "http://127.0.0.01:3000", "the host must be"),
    ("underscore", "http://loc_alhost:3000", "the host must be"),
    ("leading-hyphen", "http://-bad.test:3000", "the host must be"),
    ("empty-label", "http://a..b:3000", "the host must be"),
    ("trailing-dot", "http://localhost.:3000", "the host must be"),
    ("non-ascii", "http://b\u00fccher.test:3000", "the host must be"),
    ("kelvin-sign", "http://\u212aube.local:3000", "the host must be"),
]


@pytest.mark.parametrize(("text", "why"), [pytest.param(t, w, id=i) for i, t, w in DEV_ORIGINS_REFUSED])
def test_parse_dev_origin_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)) as caught:
        parse_dev_origin(text)
    assert "\x00" not in str(caught.value)


def test_parse_dev_origin_says_what_a_host_may_be() -> None:
    with pytest.raises(ValueError) as caught:
        parse_dev_origin("http://127.1:3000")
    assert str(caught.value) == (
        "dev instance 'http://127.1:3000': the host must be an ASCII name, a dotted-quad IPv4 address "
        "or a bracketed IPv6 address"
    )


# --- host_matches ---------------------------------------------------------------------------------------

MATCHES = [
    ("exact", "misskey.io", ["misskey.io"], True),
    ("pattern-upper", "misskey.io", ["MISSKEY.IO"], True),
    ("pattern-trailing-dot", "misskey.io", ["misskey.io."], True),
    ("pattern-spaces", "misskey.io", [" misskey.io "], True),
    ("pattern-fullwidth", "misskey.io", [FULLWIDTH_MISSKEY_IO], True),
    ("second-pattern", "misskey.io", ["mastodon.social", "misskey.io"], True),
    ("wildcard-not-apex", "misskey.io", ["*.misskey.io"], False),
    ("wildcard-child", "a.misskey.io", ["*.misskey.io"], True),
    ("wildcard-grandchild", "a.b.misskey.io", ["*.misskey.io"], True),
    ("wildcard-suffix-only", "evilmisskey.io", ["*.misskey.io"], False),
    ("exact-not-subdomain", "a.misskey.io", ["misskey.io"], False),
    ("exact-not-prefix", "misskey.io.evil.com", ["misskey.io"], False),
    ("wildcard-not-prefix", "misskey.io.evil.com", ["*.misskey.io"], False),
    ("idn-pattern", "xn--w8jxa7itv.jp", ["\u307f\u3059\u304d\u30fc.jp"], True),
    ("idn-wildcard", "a.xn--w8jxa7itv.jp", ["*.\u307f\u3059\u304d\u30fc.jp"], True),
    ("homograph-no-match", "xn--msskey-pvf.io", ["misskey.io"], False),
    ("no-patterns", "misskey.io", [], False),
    ("empty-patterns", "misskey.io", ["", " ", "*.", "*"], False),
    ("star-without-dot", "misskey.io", ["*misskey.io"], False),
    ("star-at-end", "misskey.io", ["misskey.*"], False),
    ("invalid-idn-pattern", "misskey.io", ["\U0001f4a9.io"], False),
    ("idn-pattern-ideographic-trailing-dot", "xn--w8jxa7itv.jp", ["\u307f\u3059\u304d\u30fc.jp\u3002"], True),
    ("host-not-canonical", "MISSKEY.IO.", ["misskey.io"], True),
    ("dev-hostport", "127.0.0.1:3000", ["127.0.0.1:3000"], True),
    ("dev-host-without-port", "127.0.0.1:3000", ["127.0.0.1"], False),
]


@pytest.mark.parametrize(
    ("host", "patterns", "expected"), [pytest.param(h, p, e, id=i) for i, h, p, e in MATCHES]
)
def test_host_matches(host: str, patterns: list[str], expected: bool) -> None:
    assert host_matches(host, patterns) is expected


# --- properties -----------------------------------------------------------------------------------------

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
TLD = st.sampled_from(["io", "jp", "social", "xn--p1ai", "1", "0x7f", "local", "test", "arpa", "com", "i-o"])
NAMES = st.builds(lambda labels, tld: ".".join([*labels, tld]), st.lists(LABEL, max_size=4), TLD)
SPELLINGS = st.sampled_from(
    [
        lambda n: n,
        str.upper,
        lambda n: n + ".",
        lambda n: "https://" + n + "/",
        lambda n: n + ":443",
        lambda n: "@alice@" + n,
        lambda n: "https://" + n + "/@alice",
        lambda n: n.replace(".", "\u3002"),
        lambda n: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in n),  # full width
    ]
)
TYPED = st.builds(lambda name, spell: spell(name), NAMES, SPELLINGS)
HOSTILE = st.text(alphabet=st.sampled_from("ax0179.-_:@/\\%?#[]\u3002\uff0e\u0456\u00df\u200d "), max_size=30)
ANYTHING = st.one_of(st.text(max_size=40), TYPED, HOSTILE)


@given(ANYTHING)
@settings(max_examples=400)
def test_any_text_is_refused_or_a_safe_public_host(text: str) -> None:
    try:
        instance = parse_instance(text)
    except InvalidInstance:
        return
    assert_public_host(instance.host)
    assert instance == Instance(host=instance.host, origin=f"https://{instance.host}", dev=False)


@given(ANYTHING)
@settings(max_examples=300)
def test_canonical_host_is_idempotent(text: str) -> None:
    try:
        host = canonical_host(text)
    except InvalidInstance:
        return
    assert canonical_host(host) == host
    assert canonical_host(f"https://{host}/") == host
    assert host_matches(host, [host])


@given(ANYTHING)
@settings(max_examples=200)
def test_dev_origins_only_add_their_own_hosts(text: str) -> None:
    try:
        instance = parse_instance(text, DEV)
    except InvalidInstance:
        return
    if instance.dev:
        assert instance in DEV_INSTANCES
    else:
        assert_public_host(instance.host)


@pytest.mark.parametrize(
    ("text", "reads"),
    [
        ("127.0.0.1", True),
        ("127.1", True),
        ("0x7f.1", True),
        ("1.0x7f", True),
        ("0177.0.0.1", True),
        ("2130706433", True),
        ("0x7f000001", True),
        ("256.0.0.1", False),
        ("1.2.3.4.5", False),
        ("08.0.0.1", False),
        ("misskey.io", False),
        ("0x7f.misskey.io", False),
    ],
)
def test_inet_aton_helper_agrees_with_the_c_library(text: str, reads: bool) -> None:
    assert inet_aton_reads(text) is reads
    try:
        socket.inet_aton(text)
    except OSError:
        assert not reads
    else:
        assert reads


OWNS = [
    ("https://misskey.io/auth/abc", True),
    ("https://MISSKEY.IO/auth/abc", True),
    ("HTTPS://misskey.io/", True),
    ("https://misskey.io", True),
    ("https://misskey.io/" + "a" * 2029, True),  # 2048 characters in all
    ("https://misskey.io/" + "a" * 2030, False),
    ("http://misskey.io/auth/abc", False),
    ("https://misskey.io:8443/auth", False),
    ("https://evil.example/auth/abc", False),
    ("https://misskey.io.evil.example/", False),
    ("https://user@misskey.io/", False),
    ("https://:pass@misskey.io/", False),
    ("https://misskey.io:443/", False),  # compared as written: an explicit port is not the origin tobira uses
    ("/auth/abc", False),
    ("https://[::1/", False),
    ("", False),
]


@pytest.mark.parametrize(("url", "owned"), OWNS)
def test_an_instance_owns_urls_on_its_own_origin_only(url: str, owned: bool) -> None:
    assert parse_instance("misskey.io").owns(url) is owned


@pytest.mark.parametrize("value", [None, 42, b"https://misskey.io/", ["https://misskey.io/"]])
def test_an_instance_owns_no_value_that_is_not_text(value: object) -> None:
    assert parse_instance("misskey.io").owns(value) is False
