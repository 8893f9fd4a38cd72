"""is_same_origin: only tobira's own pages may post; browsers' Origin and Sec-Fetch-Site decide."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.csrf import is_same_origin, started_here

PUBLIC = "https://tobira.example"
SAME = "https://tobira.example"

CASES = [
    # Allowed.
    pytest.param({"origin": SAME, "sec-fetch-site": "same-origin"}, True, id="same-origin-fetch"),
    pytest.param({"origin": SAME}, True, id="origin-only"),
    pytest.param({"sec-fetch-site": "same-origin"}, True, id="sec-fetch-site-only"),
    pytest.param({}, True, id="neither-header-non-browser-client"),
    pytest.param({"origin": "HTTPS://TOBIRA.EXAMPLE"}, True, id="origin-upper-case"),
    pytest.param({"origin": "https://tobira.example:443"}, True, id="origin-explicit-default-port"),
    pytest.param({"content-type": "application/json", "cookie": "x=1"}, True, id="unrelated-headers"),
    # Cross-site.
    pytest.param(
        {"origin": "https://evil.example", "sec-fetch-site": "cross-site"}, False, id="cross-site-form"
    ),
    pytest.param({"origin": "https://evil.example"}, False, id="other-origin-old-browser"),
    pytest.param({"sec-fetch-site": "cross-site"}, False, id="cross-site-without-origin"),
    pytest.param({"origin": "null"}, False, id="origin-null"),
    pytest.param({"origin": "null", "sec-fetch-site": "same-origin"}, False, id="origin-null-same-origin"),
    pytest.param({"origin": "https://tobira.example:8443"}, False, id="other-port"),
    pytest.param({"origin": "http://tobira.example"}, False, id="other-scheme"),
    pytest.param({"origin": "https://app.tobira.example"}, False, id="subdomain"),
    pytest.param({"origin": "https://tobira.example.evil.example"}, False, id="suffix-lookalike"),
    pytest.param({"origin": "https://eviltobira.example"}, False, id="prefix-lookalike"),
    pytest.param({"origin": "https://tobira.example."}, False, id="trailing-dot"),
    pytest.param({"origin": "https://tobira.example/"}, False, id="origin-with-path"),
    pytest.param({"origin": "https://user@tobira.example"}, False, id="origin-with-userinfo"),
    pytest.param({"origin": "https://tobira.example https://evil.example"}, False, id="two-origins"),
    pytest.param({"origin": ""}, False, id="origin-empty"),
    pytest.param({"origin": "tobira.example"}, False, id="origin-without-scheme"),
    pytest.param({"origin": "https://tobira.example:99999"}, False, id="origin-port-out-of-range"),
    # Sec-Fetch-Site other than same-origin.
    pytest.param({"origin": SAME, "sec-fetch-site": "same-site"}, False, id="same-site-sibling"),
    pytest.param({"sec-fetch-site": "same-site"}, False, id="same-site-without-origin"),
    pytest.param({"sec-fetch-site": "none"}, False, id="user-initiated-none"),
    pytest.param({"origin": SAME, "sec-fetch-site": "cross-site"}, False, id="origin-ok-fetch-site-cross"),
    pytest.param({"origin": SAME, "sec-fetch-site": "Same-Origin"}, False, id="fetch-site-wrong-case"),
    pytest.param({"origin": SAME, "sec-fetch-site": ""}, False, id="fetch-site-empty"),
    pytest.param(
        {"origin": "https://evil.example", "sec-fetch-site": "same-origin"},
        False,
        id="fetch-site-ok-origin-bad",
    ),
]


@pytest.mark.parametrize(("headers", "expected"), CASES)
def test_is_same_origin(headers: dict[str, str], expected: bool) -> None:
    assert is_same_origin(headers, PUBLIC) is expected


@pytest.mark.parametrize(
    ("public", "origin", "expected"),
    [
        pytest.param("http://127.0.0.1:8000", "http://127.0.0.1:8000", True, id="dev-default"),
        pytest.param("http://127.0.0.1:8000", "http://127.0.0.1:8001", False, id="dev-other-port"),
        pytest.param("http://127.0.0.1:8000", "http://localhost:8000", False, id="dev-other-name"),
        pytest.param("https://tobira.example/", SAME, True, id="public-with-trailing-slash"),
        pytest.param("https://Tobira.Example", SAME, True, id="public-mixed-case"),
        pytest.param("https://tobira.example:443", SAME, True, id="public-explicit-default-port"),
        pytest.param("http://[::1]:8000", "http://[::1]:8000", True, id="ipv6"),
        pytest.param("https://xn--r8j.example", "https://xn--r8j.example", True, id="punycode"),
        # The default ports, written or not, on either side; any other port is another origin.
        pytest.param("http://tobira.example", "http://tobira.example:80", True, id="http-80-written"),
        pytest.param("http://tobira.example:80", "http://tobira.example", True, id="http-80-configured"),
        pytest.param("https://tobira.example", "https://tobira.example:443", True, id="https-443-written"),
        pytest.param("http://tobira.example", "http://tobira.example:81", False, id="http-81"),
        pytest.param("http://tobira.example:81", "http://tobira.example", False, id="http-81-configured"),
        pytest.param("http://tobira.example", "http://tobira.example:443", False, id="http-443"),
        pytest.param("https://tobira.example", "https://tobira.example:80", False, id="https-80"),
        pytest.param("https://tobira.example", "https://tobira.example:444", False, id="https-444"),
        pytest.param("http://tobira.example", "http://tobira.example:0", False, id="port-zero"),
        pytest.param("http://tobira.example:65535", "http://tobira.example:65535", True, id="port-65535"),
    ],
)
def test_public_origin_forms(public: str, origin: str, expected: bool) -> None:
    assert is_same_origin({"origin": origin, "sec-fetch-site": "same-origin"}, public) is expected


def test_starlette_style_headers_object() -> None:
    from starlette.datastructures import Headers

    assert is_same_origin(Headers({"Origin": SAME, "Sec-Fetch-Site": "same-origin"}), PUBLIC) is True
    assert is_same_origin(Headers({"Origin": "https://evil.example"}), PUBLIC) is False


@pytest.mark.parametrize(
    "public",
    [
        "tobira.example",
        "ftp://tobira.example",
        "https://tobira.example/app",
        "",
        "http://tobira.example:0",
        "http://tobira.example:65536",
    ],
)
def test_bad_public_origin_is_a_programming_error(public: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        is_same_origin({}, public)


@given(origin=st.text(max_size=40), fetch_site=st.none() | st.text(max_size=15))
def test_only_our_origin_passes(origin: str, fetch_site: str | None) -> None:
    headers = {"origin": origin}
    if fetch_site is not None:
        headers["sec-fetch-site"] = fetch_site
    allowed = is_same_origin(headers, PUBLIC)
    ours = re.fullmatch(r"https://tobira\.example(:0*443)?", origin, re.ASCII | re.IGNORECASE) is not None
    assert allowed is (ours and fetch_site in {None, "same-origin"})


STARTS = [
    # A form post: only from tobira's own pages, and only when the browser says so.
    pytest.param("POST", {"origin": SAME, "sec-fetch-site": "same-origin"}, True, id="post-own-form"),
    pytest.param("POST", {"origin": SAME}, True, id="post-origin-only"),
    pytest.param("POST", {"sec-fetch-site": "same-origin"}, True, id="post-fetch-site-only"),
    pytest.param("POST", {}, False, id="post-neither-header"),
    pytest.param("POST", {"origin": "https://evil.example"}, False, id="post-other-origin"),
    pytest.param("POST", {"sec-fetch-site": "cross-site"}, False, id="post-cross-site"),
    pytest.param(
        "POST",
        {"sec-fetch-site": "same-site", "origin": "https://a.tobira.example"},
        False,
        id="post-sibling",
    ),
    pytest.param("POST", {"origin": "null"}, False, id="post-null-origin"),
    pytest.param("POST", {"sec-fetch-site": "none"}, False, id="post-none"),
    # A link: typed, bookmarked or followed on tobira's own pages goes on; from another site it does not.
    pytest.param("GET", {}, True, id="get-no-fetch-metadata"),
    pytest.param("GET", {"sec-fetch-site": "none"}, True, id="get-typed-or-bookmarked"),
    pytest.param("GET", {"sec-fetch-site": "same-origin"}, True, id="get-own-page"),
    pytest.param("GET", {"sec-fetch-site": "cross-site"}, False, id="get-cross-site"),
    pytest.param("GET", {"sec-fetch-site": "same-site"}, False, id="get-sibling-subdomain"),
    pytest.param("GET", {"sec-fetch-site": "strange"}, False, id="get-unknown-fetch-site"),
    pytest.param("GET", {"origin": "https://evil.example"}, False, id="get-other-origin"),
    pytest.param("GET", {"origin": SAME, "sec-fetch-site": "same-origin"}, True, id="get-own-origin"),
]


@pytest.mark.parametrize(("method", "headers", "expected"), STARTS)
def test_started_here(method: str, headers: dict[str, str], expected: bool) -> None:
    assert started_here(headers, PUBLIC, method=method) is expected


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_started_here_with_a_trailing_slash_in_the_public_origin(method: str) -> None:
    assert started_here({"origin": SAME}, PUBLIC + "/", method=method) is True
    assert started_here({"origin": "https://evil.example"}, PUBLIC + "/", method=method) is False
