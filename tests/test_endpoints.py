"""EndpointPolicy: well-formed names only, the built-in deny list always, an allow list only narrows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.endpoints import (
    BUILT_IN_DENY,
    ENDPOINT_NAME,
    SECURE_ENDPOINTS,
    EndpointPolicy,
    _secure_endpoints,
    validate_patterns,
)
from app.errors import BadRequest, ErrorCode, Forbidden

DEFAULT = EndpointPolicy()
PLAIN_NAME = re.compile(r"[a-z0-9_-]+(/[a-z0-9_-]+)*")
ENDPOINTS_JSON = Path(__file__).parent.parent / "app" / "data" / "endpoints.json"


def _assert_forbidden(policy: EndpointPolicy, name: str) -> None:
    with pytest.raises(Forbidden) as caught:
        policy.check(name)
    assert caught.value.code is ErrorCode.ENDPOINT_NOT_ALLOWED
    assert caught.value.status == 403
    assert caught.value.message == "tobira does not forward this API endpoint."


def _assert_malformed(policy: EndpointPolicy, name: str) -> None:
    with pytest.raises(BadRequest) as caught:
        policy.check(name)
    assert caught.value.code is ErrorCode.INVALID_ENDPOINT
    assert caught.value.status == 400
    assert caught.value.message == "That is not an API endpoint name."


@pytest.mark.parametrize(
    "name",
    [
        "notes/create",
        "notes/timeline",
        "i",
        "drive/files/create",
        "users/show",
        "i/registry/get",
        "i/registry/set",
        "i/notifications",
        "i/update",
        "i/favorites",
        "meta",
        "charts/user/notes",
        "notes/search-by-tag",
        "users/get-frequently-replied-users",
        "some-fork/custom_endpoint",
        "a" * 128,
    ],
)
def test_allowed_by_default(name: str) -> None:
    DEFAULT.check(name)


DENIED = [
    # Marked secure by Misskey.
    pytest.param("i/registry/scopes-with-domain", id="secure-registry-scopes"),
    pytest.param("sw/register", id="secure-sw-register"),
    pytest.param("page-push", id="secure-page-push"),
    pytest.param("fetch-external-resources", id="secure-fetch-external"),
    pytest.param("export-custom-emojis", id="secure-export-emojis"),
    # Administration.
    pytest.param("admin/meta", id="admin-meta"),
    pytest.param("admin/accounts/create", id="admin-accounts-create"),
    pytest.param("admin/emoji/import-zip", id="admin-emoji-import"),
    pytest.param("admin/some-future-endpoint", id="admin-unknown"),
    # Credentials and apps.
    pytest.param("miauth/gen-token", id="miauth-gen-token"),
    pytest.param("miauth/0b5c/check", id="miauth-check"),
    pytest.param("auth/accept", id="auth-accept"),
    pytest.param("auth/session/generate", id="auth-session-generate"),
    pytest.param("auth/session/userkey", id="auth-session-userkey"),
    pytest.param("app/create", id="app-create"),
    pytest.param("app/show", id="app-show"),
    # Webhooks.
    pytest.param("i/webhooks/create", id="webhooks-create"),
    pytest.param("i/webhooks/list", id="webhooks-list"),
    pytest.param("i/webhooks/test", id="webhooks-test"),
    # Two-factor authentication.
    pytest.param("i/2fa/register", id="2fa-register"),
    pytest.param("i/2fa/unregister", id="2fa-unregister"),
    pytest.param("i/2fa/password-less", id="2fa-password-less"),
    # Bulk import and export.
    pytest.param("i/import-following", id="import-following"),
    pytest.param("i/import-notes", id="import-notes-future"),
    pytest.param("i/export-notes", id="export-notes"),
    pytest.param("i/export-following", id="export-following"),
    # The account itself.
    pytest.param("i/delete-account", id="delete-account"),
    pytest.param("i/change-password", id="change-password"),
    pytest.param("i/update-email", id="update-email"),
    pytest.param("i/regenerate-token", id="regenerate-token"),
    pytest.param("i/revoke-token", id="revoke-token"),
    pytest.param("i/move", id="move"),
    pytest.param("i/apps", id="apps"),
    pytest.param("i/authorized-apps", id="authorized-apps"),
    pytest.param("i/signin-history", id="signin-history"),
]


@pytest.mark.parametrize("name", DENIED)
def test_denied_by_default(name: str) -> None:
    _assert_forbidden(DEFAULT, name)


def test_every_secure_endpoint_is_denied() -> None:
    endpoints = json.loads(ENDPOINTS_JSON.read_text())
    secure = [name.strip("/") for name, spec in endpoints.items() if spec["secure"]]
    assert len(secure) == 52
    for name in secure:
        _assert_forbidden(DEFAULT, name)
    # Read again, not only the constant made at import: the reading itself is under test.
    assert SECURE_ENDPOINTS == _secure_endpoints() == set(secure)


# Each built-in pattern and a name it refuses; for a prefix, a name endpoints.json does not know at all.
ON_ITS_OWN = [
    ("admin/*", "admin/some-future-endpoint"),
    ("miauth/*", "miauth/future"),
    ("auth/*", "auth/future"),
    ("app/*", "app/future"),
    ("i/webhooks/*", "i/webhooks/future"),
    ("i/2fa/*", "i/2fa/future"),
    ("i/import-*", "i/import-future"),
    ("i/export-*", "i/export-future"),
    ("i/delete-account", "i/delete-account"),
    ("i/change-password", "i/change-password"),
    ("i/update-email", "i/update-email"),
    ("i/regenerate-token", "i/regenerate-token"),
    ("i/revoke-token", "i/revoke-token"),
    ("i/move", "i/move"),
    ("i/apps", "i/apps"),
    ("i/authorized-apps", "i/authorized-apps"),
    ("i/signin-history", "i/signin-history"),
]


def test_every_built_in_pattern_has_a_case() -> None:
    assert sorted(BUILT_IN_DENY) == sorted(pattern for pattern, _ in ON_ITS_OWN)


@pytest.mark.parametrize(("pattern", "name"), ON_ITS_OWN, ids=[pattern for pattern, _ in ON_ITS_OWN])
def test_the_built_in_deny_list_stands_without_the_secure_flags(pattern: str, name: str) -> None:
    # What a fork that marks nothing secure gets: the built-in list alone.
    if pattern.endswith("*"):
        assert name not in {known.strip("/") for known in json.loads(ENDPOINTS_JSON.read_text())}
    _assert_forbidden(EndpointPolicy(secure=()), name)
    _assert_forbidden(EndpointPolicy(["*"], secure=()), name)


def test_the_secure_list_is_denied_on_top_of_the_built_in_one() -> None:
    EndpointPolicy(secure=()).check("sw/register")
    _assert_forbidden(EndpointPolicy(secure=["notes/create"]), "notes/create")
    EndpointPolicy(secure=["notes/create"]).check("notes/timeline")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("notes.create", id="dot"),
        pytest.param("..", id="dotdot"),
        pytest.param(".", id="single-dot"),
        pytest.param("notes/../admin/meta", id="dotdot-segment"),
        pytest.param("notes/./create", id="dot-segment"),
        pytest.param("notes%2fcreate", id="encoded-slash"),
        pytest.param("notes%2Fcreate", id="encoded-slash-upper"),
        pytest.param("notes/%2e%2e/admin/meta", id="encoded-dots"),
        pytest.param("notes%252Fcreate", id="double-encoded-slash"),
        pytest.param("https://evil.example/api/i", id="absolute-url"),
        pytest.param("//evil.example/i", id="protocol-relative"),
        pytest.param("notes\\create", id="backslash"),
        pytest.param("\\notes", id="leading-backslash"),
        pytest.param("notes\x00", id="nul"),
        pytest.param("notes/create\n", id="trailing-newline"),
        pytest.param("notes\t/create", id="tab"),
        pytest.param("notes create", id="space"),
        pytest.param("notes?create", id="query"),
        pytest.param("notes#create", id="fragment"),
        pytest.param("notes;create", id="semicolon"),
        pytest.param("i@evil.example", id="at"),
        pytest.param("\uff4eotes/create", id="fullwidth-letter"),
        pytest.param("n\u043etes/create", id="cyrillic-o"),
        pytest.param("notes/creat\u0435", id="cyrillic-e"),
        pytest.param("notes\uff0fcreate", id="fullwidth-solidus"),
        pytest.param("\u212aelvin", id="kelvin-sign"),
        pytest.param("\u0131", id="dotless-i"),
        pytest.param("notes/create\u200b", id="zero-width-space"),
        pytest.param("Notes/create", id="uppercase-first"),
        pytest.param("NOTES/CREATE", id="uppercase"),
        pytest.param("I", id="uppercase-i"),
        pytest.param("/notes/create", id="leading-slash"),
        pytest.param("notes/create/", id="trailing-slash"),
        pytest.param("notes//create", id="double-slash"),
        pytest.param("/", id="slash-only"),
        pytest.param("", id="empty"),
        pytest.param("a" * 129, id="129-chars"),
        pytest.param("a/" * 64 + "b", id="129-chars-segments"),
    ],
)
def test_malformed(name: str) -> None:
    _assert_malformed(DEFAULT, name)
    _assert_malformed(EndpointPolicy(["*"]), name)


def test_allow_list_narrows() -> None:
    policy = EndpointPolicy(["notes/*", "i"])
    policy.check("notes/create")
    policy.check("notes/timeline")
    policy.check("i")
    _assert_forbidden(policy, "users/show")
    _assert_forbidden(policy, "i/notifications")
    _assert_forbidden(policy, "notes")
    _assert_forbidden(policy, "notesx/create")


def test_prefix_does_not_allow_other_names() -> None:
    policy = EndpointPolicy(["notes/*"])
    policy.check("notes/create")
    _assert_forbidden(policy, "i")


def test_allow_list_cannot_reenable_denied_endpoints() -> None:
    policy = EndpointPolicy(["admin/*", "admin/meta", "miauth/*", "i/2fa/*", "sw/register", "i/*"])
    for name in ("admin/meta", "miauth/gen-token", "i/2fa/register", "sw/register", "i/delete-account"):
        _assert_forbidden(policy, name)
    policy.check("i/notifications")


def test_star_allows_everything_but_the_deny_list() -> None:
    policy = EndpointPolicy(["*"])
    policy.check("users/show")
    _assert_forbidden(policy, "admin/meta")


def test_empty_allow_list_allows_nothing() -> None:
    _assert_forbidden(EndpointPolicy([]), "notes/create")


def test_malformed_name_is_reported_before_the_allow_list() -> None:
    _assert_malformed(EndpointPolicy(["notes/*"]), "admin/../notes/create")


def test_malformed_allow_list_raises() -> None:
    with pytest.raises(ValueError, match=r"\['Notes/\*'\]"):
        EndpointPolicy(["notes/create", "Notes/*"])


@pytest.mark.parametrize(
    "patterns",
    [
        pytest.param([], id="empty"),
        pytest.param(["*"], id="star"),
        pytest.param(["notes/*", "i", "drive/files/create"], id="names-and-prefixes"),
        pytest.param(["i/*"], id="partly-denied-prefix"),
        pytest.param(["i/registry/*"], id="registry"),
        pytest.param(["a" * 128 + "/*"], id="longest"),
    ],
)
def test_valid_patterns(patterns: list[str]) -> None:
    assert validate_patterns(patterns) == []


NOT_A_PATTERN = "is not an endpoint name (such as notes/create) or a prefix (such as notes/*)"
ALWAYS_DENIED = "is always refused by tobira's built-in deny list"


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        pytest.param("", NOT_A_PATTERN, id="empty"),
        pytest.param("notes/", NOT_A_PATTERN, id="trailing-slash"),
        pytest.param("/notes/*", NOT_A_PATTERN, id="leading-slash"),
        pytest.param("Notes/*", NOT_A_PATTERN, id="uppercase"),
        pytest.param("notes/**", NOT_A_PATTERN, id="double-star"),
        pytest.param("notes*", NOT_A_PATTERN, id="star-without-slash"),
        pytest.param("*/create", NOT_A_PATTERN, id="leading-star"),
        pytest.param("notes/*/create", NOT_A_PATTERN, id="inner-star"),
        pytest.param(" notes/create", NOT_A_PATTERN, id="space"),
        pytest.param("notes.create", NOT_A_PATTERN, id="dot"),
        pytest.param("a" * 129, NOT_A_PATTERN, id="too-long"),
        pytest.param("a" * 129 + "/*", NOT_A_PATTERN, id="too-long-prefix"),
        pytest.param("admin/*", ALWAYS_DENIED, id="admin-prefix"),
        pytest.param("admin/emoji/*", ALWAYS_DENIED, id="admin-sub-prefix"),
        pytest.param("admin/meta", ALWAYS_DENIED, id="admin-meta"),
        pytest.param("i/2fa/*", ALWAYS_DENIED, id="2fa"),
        pytest.param("i/delete-account", ALWAYS_DENIED, id="delete-account"),
        pytest.param("i/export-notes", ALWAYS_DENIED, id="export"),
        pytest.param("sw/register", ALWAYS_DENIED, id="secure"),
    ],
)
def test_pattern_problems(pattern: str, problem: str) -> None:
    assert validate_patterns(["notes/*", pattern]) == [f"{pattern!r} {problem}"]


def test_every_problem_is_listed() -> None:
    assert len(validate_patterns(["admin/*", "", "users/show", "Bad"])) == 3


def test_endpoint_name_regex_is_the_documented_grammar() -> None:
    assert ENDPOINT_NAME.fullmatch("notes/create")
    assert not ENDPOINT_NAME.fullmatch("notes/create\n")
    assert not ENDPOINT_NAME.fullmatch("a" * 129)


def _checked(policy: EndpointPolicy, name: str) -> bool:
    """True if `check` accepted `name`, False if it refused it in one of the two documented ways."""
    try:
        policy.check(name)
    except (BadRequest, Forbidden) as error:
        assert error.code in {ErrorCode.INVALID_ENDPOINT, ErrorCode.ENDPOINT_NOT_ALLOWED}
        return False
    return True


@given(st.text(max_size=140))
def test_anything_accepted_is_a_plain_name(name: str) -> None:
    if _checked(DEFAULT, name):
        assert PLAIN_NAME.fullmatch(name)
        assert len(name) <= 128


@given(st.text(alphabet="abi/_-.%2fF\\\x00 A\u0131\u212a\uff4e", max_size=20))
def test_near_misses_accepted_only_as_plain_names(name: str) -> None:
    if _checked(DEFAULT, name):
        assert PLAIN_NAME.fullmatch(name)


@given(st.from_regex(PLAIN_NAME, fullmatch=True).filter(lambda name: len(name) <= 128))
def test_plain_names_are_never_malformed(name: str) -> None:
    try:
        DEFAULT.check(name)
    except Forbidden as error:
        assert error.code is ErrorCode.ENDPOINT_NOT_ALLOWED
