"""safe_return_to: only a path on tobira's own origin survives; every open-redirect trick becomes "/"."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, unquote, urljoin, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.redirects import MAX_LENGTH, safe_return_to

BASE = "https://tobira.example/"

# Format characters: zero-width space, word joiner, right-to-left override, soft hyphen, byte order mark.
INVISIBLE = {
    "zwsp": "\u200b",
    "word-joiner": "\u2060",
    "rlo": "\u202e",
    "soft-hyphen": "\u00ad",
    "bom": "\ufeff",
}
INVISIBLE_BETWEEN_SLASHES = [
    pytest.param(f"/{encoded}/evil.example", id=f"{times}-encoded-{name}")
    for name, char in INVISIBLE.items()
    for times, encoded in (("once", quote(char)), ("twice", quote(quote(char))))
]

REFUSED = [
    # Protocol-relative and its spellings.
    pytest.param("//evil.example", id="double-slash"),
    pytest.param("///evil.example", id="triple-slash"),
    pytest.param("////evil.example/", id="quadruple-slash"),
    pytest.param("//evil.example/%2e%2e", id="double-slash-encoded-dots"),
    pytest.param("//evil%2F..", id="double-slash-encoded-slash-dots"),
    pytest.param("//tobira.example@evil.example", id="double-slash-userinfo"),
    pytest.param("//%09/evil.example", id="double-slash-encoded-tab"),
    # Backslashes, which browsers read as slashes.
    pytest.param("/\\evil.example", id="slash-backslash"),
    pytest.param("\\/evil.example", id="backslash-slash"),
    pytest.param("\\\\evil.example", id="double-backslash"),
    pytest.param("\\evil.example", id="backslash"),
    pytest.param("/\\/evil.example/", id="slash-backslash-slash"),
    pytest.param("/\\@evil.example", id="slash-backslash-at"),
    pytest.param("/dashboard\\..\\..", id="backslash-inside"),
    # Whitespace and controls, which browsers drop or trim.
    pytest.param("/\t/evil.example", id="tab-between-slashes"),
    pytest.param("/\n/evil.example", id="lf-between-slashes"),
    pytest.param("/\r/evil.example", id="cr-between-slashes"),
    pytest.param("/\x00/evil.example", id="nul-between-slashes"),
    pytest.param("/ /evil.example", id="space-between-slashes"),
    pytest.param("\t//evil.example", id="leading-tab"),
    pytest.param(" /dashboard", id="leading-space"),
    pytest.param("/dashboard ", id="trailing-space"),
    pytest.param("/dash\x1bboard", id="escape-char"),
    pytest.param("/dashboard\x7f", id="del-char"),
    pytest.param("/\u3000/evil.example", id="ideographic-space"),
    pytest.param("/\u2028/evil.example", id="line-separator"),
    pytest.param("/\u00a0/evil.example", id="no-break-space"),
    pytest.param("/\u200b/evil.example", id="zero-width-space"),
    pytest.param("/\u202e/elpmaxe.live", id="right-to-left-override"),
    # Schemes and other origins.
    pytest.param("javascript:alert(1)", id="javascript"),
    pytest.param("JaVaScRiPt:alert(1)", id="javascript-mixed-case"),
    pytest.param("data:text/html,<script>alert(1)</script>", id="data-url"),
    pytest.param("https://evil.example", id="https-url"),
    pytest.param("http://evil.example/", id="http-url"),
    pytest.param("http:/evil.example", id="http-one-slash"),
    pytest.param("http:evil.example", id="http-no-slash"),
    pytest.param("https:\\\\evil.example", id="https-backslashes"),
    pytest.param("https://tobira.example@evil.example/", id="userinfo-lookalike"),
    pytest.param("evil.example", id="bare-host"),
    pytest.param("@evil.example", id="at-host"),
    pytest.param("evil.example@/dashboard", id="at-before-first-slash"),
    pytest.param("%68%74%74%70%3a%2f%2fevil.example", id="encoded-http-url"),
    # Relative references.
    pytest.param("dashboard", id="relative-path"),
    pytest.param("./dashboard", id="dot-relative"),
    pytest.param("../dashboard", id="dotdot-relative"),
    pytest.param("?tab=1", id="query-only"),
    pytest.param("#top", id="fragment-only"),
    # Percent-encoded slashes, backslashes and whitespace, once or several times.
    pytest.param("/%2F%2Fevil.example", id="encoded-double-slash"),
    pytest.param("/%2f%2fevil.example", id="encoded-double-slash-lowercase"),
    pytest.param("/%2Fevil.example", id="encoded-second-slash"),
    pytest.param("%2F%2Fevil.example", id="fully-encoded-double-slash"),
    pytest.param("/%5Cevil.example", id="encoded-backslash"),
    pytest.param("/%5cevil.example", id="encoded-backslash-lowercase"),
    pytest.param("/%2f%5c%2f%67%6f%6f%67%6c%65%2e%63%6f%6d/", id="encoded-slash-backslash-host"),
    pytest.param("/%09/evil.example", id="encoded-tab"),
    pytest.param("/%0A/evil.example", id="encoded-lf"),
    pytest.param("/%0d/evil.example", id="encoded-cr"),
    pytest.param("/%00/evil.example", id="encoded-nul"),
    pytest.param("/%20/evil.example", id="encoded-space"),
    pytest.param("/%E3%80%80/evil.example", id="encoded-ideographic-space"),
    pytest.param("/%09/javascript:alert(1)", id="encoded-tab-javascript"),
    pytest.param("/%252F%252Fevil.example", id="double-encoded-slashes"),
    pytest.param("/%25252F%25252Fevil.example", id="triple-encoded-slashes"),
    pytest.param("/%255Cevil.example", id="double-encoded-backslash"),
    pytest.param("/%2525252525252Fx", id="encoded-beyond-any-reason"),
    pytest.param("/a%2525252520b", id="harmless-but-encoded-five-times"),
    pytest.param("/https:/%5cevil.example/", id="encoded-backslash-after-scheme-like"),
    # Look-alikes: full-width solidus and reverse solidus, ideographic full stop.
    pytest.param("\uff0f\uff0fevil.example", id="fullwidth-solidus"),
    pytest.param("/\uff0fevil.example", id="slash-fullwidth-solidus"),
    pytest.param("/%EF%BC%8Fevil.example", id="encoded-fullwidth-solidus"),
    pytest.param("/%EF%BC%BCevil.example", id="encoded-fullwidth-reverse-solidus"),
    pytest.param("/。evil.example", id="ideographic-full-stop"),
    pytest.param("/\u2215\u2215evil.example", id="division-slash"),
    # Dot segments that collapse to "//host".
    pytest.param("/../..//evil.example", id="dotdot-then-double-slash"),
    pytest.param("/.//evil.example", id="dot-then-double-slash"),
    pytest.param("/a/../..//evil.example", id="segment-dotdot-double-slash"),
    pytest.param("/./%2Fevil.example", id="dot-encoded-slash"),
    pytest.param("/%2e%2e/%2e%2e//evil.example", id="encoded-dotdot-double-slash"),
    pytest.param("/%2e/%2fevil.example", id="encoded-dot-encoded-slash"),
    # Percent-encoded invisible ("Cf") characters, which readers drop, between two slashes: once and twice.
    *INVISIBLE_BETWEEN_SLASHES,
    # Bounds and types.
    pytest.param("", id="empty"),
    pytest.param(None, id="none"),
    pytest.param("/" + "a" * MAX_LENGTH, id="too-long"),
]

ACCEPTED = [
    pytest.param("/", id="root"),
    pytest.param("/dashboard?tab=1#x", id="query-and-fragment"),
    pytest.param("/a/b%20c", id="encoded-space-inside"),
    pytest.param("/notes/9abcdef", id="plain-path"),
    pytest.param("/@alice@misskey.example", id="misskey-user-path"),
    pytest.param("/search?q=%E3%81%82", id="encoded-non-ascii"),
    pytest.param("/cb?next=https://example.org/x", id="url-in-query"),
    pytest.param("/#//not-a-host", id="double-slash-in-fragment"),
    pytest.param("/a//b", id="double-slash-inside"),
    pytest.param("/a/../b", id="harmless-dotdot"),
    pytest.param("/a/..", id="dotdot-to-root"),
    pytest.param("/https://example.org", id="scheme-like-segment-is-a-path"),
    pytest.param("/~user/a;b=c,d", id="sub-delims"),
    pytest.param("/" + "a" * (MAX_LENGTH - 1), id="longest"),
    pytest.param("/a%E2%80%8Bb/%C2%ADc", id="encoded-invisible-inside-segments"),
    pytest.param("/a%25252520b", id="encoded-four-times"),
    pytest.param("/a/b/..", id="trailing-dotdot"),
    # Dot segments after "?" or "#" are no path: nothing resolves them.
    pytest.param("/a?/../..//evil.example?b", id="dotdot-double-slash-in-query"),
    pytest.param("/a#/../..//evil.example#b", id="dotdot-double-slash-in-fragment"),
]


@pytest.mark.parametrize("value", REFUSED)
def test_refused(value: str | None) -> None:
    assert safe_return_to(value) == "/"


@pytest.mark.parametrize("value", ACCEPTED)
def test_accepted(value: str) -> None:
    assert safe_return_to(value) == value


def _readings(location: str) -> list[str]:
    """How lenient readers might see a Location: each percent-decoding, cleaned up the way browsers do."""
    forms = [location]
    for _ in range(6):
        forms.append(unquote(forms[-1]))
    readings = []
    for form in forms:
        text = unicodedata.normalize("NFKC", form)
        text = "".join(c for c in text if c not in "\t\n\r").lstrip("".join(map(chr, range(0x21))))
        readings.append(text.replace("\\", "/"))
    return readings


def _assert_stays_home(result: str) -> None:
    assert "\\" not in result
    assert result.startswith("/")
    assert not result.startswith("//")
    for reading in _readings(result):
        joined = urlsplit(urljoin(BASE, reading))
        assert joined.scheme == "https", reading
        assert joined.netloc == "tobira.example", reading


@given(st.text(max_size=80))
def test_any_text_stays_on_origin(value: str) -> None:
    result = safe_return_to(value)
    assert result in {value, "/"}
    _assert_stays_home(result)


TRICKY_PIECES = [
    "/", "//", "\\", "%2F", "%2f", "%5C", "%25", "%09", "%20", "%2e", ".", "..", "@", ":", "?", "#",
    "evil.example", "a", "https:", "javascript:", "\t", " ", "\uff0f", "%EF%BC%8F", "\u3000", "\x00",
]  # fmt: skip


@given(st.lists(st.sampled_from(TRICKY_PIECES), max_size=12).map("".join))
def test_tricky_compositions_stay_on_origin(value: str) -> None:
    result = safe_return_to(value)
    assert result in {value, "/"}
    _assert_stays_home(result)


@given(st.lists(st.from_regex(r"[A-Za-z0-9_~-]{1,12}", fullmatch=True), max_size=8))
def test_ordinary_paths_kept_unchanged(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    assert safe_return_to(path) == path


DOMAIN_PAGE = "https://app.example.com/"


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://app.example.com", True),  # no path: "/" is meant
        ("https://app.example.com?x=1", True),  # a query with no path before it
        ("https://example.com/a", True),
        ("https://app.example.com:65535/", True),
        ("https://app.example.com:65536/", False),
        ("https://evil.example/", False),
        ("https://notexample.com/", False),
        ("https://APP.example.com/", False),
        ("https://app.example.com//evil.example", False),
        (DOMAIN_PAGE + "a" * (MAX_LENGTH - len(DOMAIN_PAGE)), True),
        (DOMAIN_PAGE + "a" * (MAX_LENGTH - len(DOMAIN_PAGE) + 1), False),
    ],
)
def test_urls_on_the_cookie_domain(url: str, kept: bool) -> None:
    assert safe_return_to(url, "example.com") == (url if kept else "/")


PREFIX = "/misskey"


@pytest.mark.parametrize(
    "value",
    [
        "/misskey",
        "/misskey/",
        "/misskey/button",
        "/misskey/login?return_to=/misskey/x",
        "/misskey/a/../b",
        "/misskey/%41",
    ],
)
def test_under_a_prefix_its_paths_are_kept(value: str) -> None:
    assert safe_return_to(value, None, PREFIX) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "/",
        "/login",
        "/misskeyx",
        "/misskeyx/login",
        "/Misskey/login",
        "/misskey/..",
        "/misskey/../admin",
        "/misskey/%2e%2e/admin",
        "/misskey/%252e%252e/admin",
        "/misskey/./../admin",
        "/misskey/a/../../admin",
        "//misskey/",
        "https://evil.example/misskey/",
        "/misskey%2F..%2Fadmin",
    ],
)
def test_under_a_prefix_everything_else_is_the_prefixs_home(value: str | None) -> None:
    assert safe_return_to(value, None, PREFIX) == PREFIX + "/"


def test_under_a_prefix_the_cookie_domain_still_applies() -> None:
    url = "https://app.example.com/dashboard"
    assert safe_return_to(url, "example.com", PREFIX) == url
    assert safe_return_to("https://evil.example/", "example.com", PREFIX) == PREFIX + "/"


@given(st.text(max_size=80))
def test_under_a_prefix_any_text_stays_under_it(value: str) -> None:
    result = safe_return_to(value, None, PREFIX)
    assert result in {value, PREFIX + "/"}
    _assert_stays_home(result)
    for reading in _readings(result):
        path = urlsplit(urljoin(BASE, reading)).path
        assert path == PREFIX or path.startswith(PREFIX + "/"), reading


@given(st.text(max_size=60))
def test_idempotent(value: str) -> None:
    once = safe_return_to(value)
    assert safe_return_to(once) == once
