"""The stand-in Misskey server, driven over real HTTP: it must answer as PROTOCOL.md says a real one does."""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import struct
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from app.standin import RunningStandin, StandinConfig, StandinUser, run_standin_in_thread
from app.standin.catalog import endpoints, permissions
from app.standin.consent import callback_with_session, describe_permission, requested_permissions

SERVER_CONFIG = StandinConfig(base_url="")
ALL_PERMISSIONS = sorted(permissions())
AUTH_FAILED_HEADER = (
    'Bearer realm="Misskey", error="invalid_token", '
    'error_description="Authentication failed. Please ensure your token is correct."'
)
SCOPE_HEADER = (
    'Bearer realm="Misskey", error="insufficient_scope", '
    'error_description="Your app does not have the necessary permissions to use this endpoint."'
)


def png(width: int, height: int) -> bytes:
    """A valid, tiny PNG of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def server() -> Iterator[RunningStandin]:
    """One default stand-in for the tests that only add to its state (fresh sessions, fresh tokens)."""
    with run_standin_in_thread(SERVER_CONFIG) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningStandin) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as http:
        yield http


@pytest.fixture
def serve() -> Callable[..., AbstractContextManager[RunningStandin]]:
    """A stand-in of its own, for tests that change the configuration or need an empty state."""
    return lambda **changes: run_standin_in_thread(replace(SERVER_CONFIG, **changes))


def new_session() -> str:
    return str(uuid.uuid4())


def approve(http: httpx.Client, session: str, query: dict[str, str], user: str = "alice") -> httpx.Response:
    """What a person does: open the consent page, choose the account, click Accept."""
    assert http.get(f"/miauth/{session}", params=query).status_code == 200
    assert http.get(f"/miauth/{session}", params={**query, "user": user}).status_code == 200
    return http.post(f"/miauth/{session}/accept", data={"user": user})


def token_for(server: RunningStandin, *granted: str, user: str = "alice") -> str:
    return server.state.issue_token(user, list(granted)).token


def error(code: str, message: str, error_id: str, kind: str = "client", **info: object) -> dict[str, object]:
    body: dict[str, object] = {"message": message, "code": code, "id": error_id, "kind": kind}
    if info:
        body["info"] = info
    return {"error": body}


CREDENTIAL_REQUIRED = error(
    "CREDENTIAL_REQUIRED", "Credential required.", "1384574d-a912-4b81-8601-c7b1c4085df1"
)
AUTHENTICATION_FAILED = error(
    "AUTHENTICATION_FAILED",
    "Authentication failed. Please ensure your token is correct.",
    "b0a7f5f8-dc2f-4171-b91f-de88ad238e14",
)
PERMISSION_DENIED = error(
    "PERMISSION_DENIED",
    "Your app does not have the necessary permissions to use this endpoint.",
    "1370e5b7-d4eb-4566-bb1d-7748ee6a1838",
    kind="permission",
)
ACCESS_DENIED = error("ACCESS_DENIED", "Access denied.", "56f35758-7dd5-468b-8439-5d6fb8ec9b8e")


# -- discovery ---------------------------------------------------------------------------------------------


def test_well_known_nodeinfo_is_an_empty_403_while_nodeinfo_documents_work(client: httpx.Client) -> None:
    well_known = client.get("/.well-known/nodeinfo")
    assert (well_known.status_code, well_known.content) == (403, b"")
    document = client.get("/nodeinfo/2.1")
    assert document.status_code == 200
    assert document.headers["content-type"] == (
        'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/2.1#"'
    )
    body = document.json()
    assert body["version"] == "2.1"
    assert body["software"] == {
        "name": "misskey",
        "version": "2026.5.4",
        "homepage": "https://github.com/misskey-dev/misskey",
        "repository": "https://github.com/misskey-dev/misskey",
    }
    assert body["metadata"]["nodeName"] == "Stand-in Misskey"
    assert "repository" not in client.get("/nodeinfo/2.0").json()["software"]


def test_federating_fork_links_its_nodeinfo(
    serve: Callable[..., AbstractContextManager[RunningStandin]],
) -> None:
    with serve(federation=True, software="sharkey", version="2025.4.3") as fork, httpx.Client() as http:
        links = http.get(fork.url + "/.well-known/nodeinfo").json()["links"]
        assert [link["href"] for link in links] == [fork.url + "/nodeinfo/2.1", fork.url + "/nodeinfo/2.0"]
        software = http.get(links[1]["href"]).json()["software"]
        assert (software["name"], software["version"]) == ("sharkey", "2025.4.3")


def test_meta_describes_the_server(client: httpx.Client, server: RunningStandin) -> None:
    answer = client.post("/api/meta", json={})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    assert answer.headers["cache-control"] == "private, max-age=0, must-revalidate"
    meta = answer.json()
    assert (meta["name"], meta["version"], meta["uri"]) == ("Stand-in Misskey", "2026.5.4", server.url)
    assert meta["features"]["miauth"] is True
    assert meta["iconUrl"] == server.url + "/static-assets/icons/192.png"
    icon = client.get(meta["iconUrl"])
    assert (icon.status_code, icon.headers["content-type"], icon.content[:4]) == (
        200,
        "image/png",
        b"\x89PNG",
    )
    assert "features" not in client.post("/api/meta", json={"detail": False}).json()


def test_server_without_miauth_has_no_flag_and_no_routes(
    serve: Callable[..., AbstractContextManager[RunningStandin]],
) -> None:
    with serve(miauth=False, version="12.20.0") as old, httpx.Client(base_url=old.url) as http:
        assert "miauth" not in http.post("/api/meta", json={}).json()["features"]
        assert http.get("/miauth/x?name=a").status_code == 404
        check = http.post("/api/miauth/x/check", json={})
        assert (check.status_code, check.json()) == (
            404,
            {"message": "Route POST:/api/miauth/x/check not found", "error": "Not Found", "statusCode": 404},
        )


# -- MiAuth ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("callback", "expected"),
    [
        pytest.param("https://app.test/cb", "https://app.test/cb?session={s}", id="plain"),
        pytest.param(
            "https://app.test/cb?session=old&x=1", "https://app.test/cb?session={s}&x=1", id="overwrite"
        ),
        pytest.param(
            "https://app.test/cb?a=1&session=o1&b=2&session=o2#top",
            "https://app.test/cb?a=1&session={s}&b=2#top",
            id="overwrite-all-keep-fragment",
        ),
        pytest.param(
            "http://127.0.0.1:8000/callback", "http://127.0.0.1:8000/callback?session={s}", id="port"
        ),
        pytest.param("myapp://signed-in", "myapp://signed-in?session={s}", id="custom-scheme"),
    ],
)
def test_accept_redirects_to_the_callback_with_the_session(
    client: httpx.Client, server: RunningStandin, callback: str, expected: str
) -> None:
    session = new_session()
    query = {"name": "tobira", "callback": callback, "permission": "read:account,write:notes"}
    answer = approve(client, session, query)
    assert answer.status_code == 303
    assert answer.headers["location"] == expected.format(s=session)
    token = server.state.tokens[server.state.token_of("alice") or ""]
    assert (token.session, token.permissions, token.name) == (
        session,
        ("read:account", "write:notes"),
        "tobira",
    )


def test_check_is_one_shot_and_counted(client: httpx.Client, server: RunningStandin) -> None:
    session = new_session()
    approve(client, session, {"callback": "https://app.test/cb", "permission": "read:account"}, user="bob")
    first = client.post(f"/api/miauth/{session}/check", json={})
    assert first.status_code == 200
    body = first.json()
    assert body["ok"] is True
    assert re.fullmatch(r"[A-Za-z0-9]{32}", body["token"])
    user = body["user"]
    assert {key: user[key] for key in ("id", "username", "host", "name", "isBot", "isCat")} == {
        "id": "9x1bob0000",
        "username": "bob",
        "host": None,
        "name": "Bob 🐈",
        "isBot": False,
        "isCat": True,
    }
    assert user["avatarUrl"] == f"{server.url}/avatar/9x1bob0000"
    assert len(user) >= 40 and "email" not in user and "isAdmin" not in user
    assert client.post(f"/api/miauth/{session}/check", json={}).json() == {"ok": False}
    assert server.state.check_count(session) == 2
    me = client.post("/api/i", json={"i": body["token"]})
    assert (me.status_code, me.json()["username"]) == (200, "bob")


@pytest.mark.parametrize("state", ["unknown", "shown-not-approved", "denied"])
def test_check_is_false_unless_approved(client: httpx.Client, server: RunningStandin, state: str) -> None:
    session = new_session()
    if state != "unknown":
        client.get(f"/miauth/{session}", params={"callback": "https://app.test/cb"})
    if state == "denied":
        denied = client.post(f"/miauth/{session}/deny")
        assert denied.status_code == 200
        assert "location" not in denied.headers
        assert "denied" in denied.text
    answer = client.post(f"/api/miauth/{session}/check", json={})
    assert (answer.status_code, answer.json()) == (200, {"ok": False})
    assert not [t for t in server.state.tokens.values() if t.session == session]


def test_check_with_an_empty_json_body_is_a_fastify_400_and_not_a_check(
    client: httpx.Client, server: RunningStandin
) -> None:
    session = new_session()
    approve(client, session, {"callback": "https://app.test/cb"})
    answer = client.post(f"/api/miauth/{session}/check", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json() == {
        "statusCode": 400,
        "code": "FST_ERR_CTP_EMPTY_JSON_BODY",
        "error": "Bad Request",
        "message": "Body cannot be empty when content-type is set to 'application/json'",
    }
    assert server.state.check_count(session) == 0
    assert client.post(f"/api/miauth/{session}/check").json()["ok"] is True  # no body at all is fine


def test_consent_pages_show_accounts_then_the_request(client: httpx.Client) -> None:
    session = new_session()
    query = {
        "name": "<b>tobira</b>",
        "icon": "https://app.test/icon.png",
        "callback": "https://app.test/cb?x=1&y=2",
        "permission": "read:account,write:drive",
        "description": "ignored",
    }
    accounts = client.get(f"/miauth/{session}", params=query)
    assert accounts.status_code == 200
    assert accounts.headers["content-type"] == "text/html; charset=utf-8"
    assert f'<form method="get" action="/miauth/{session}">' in accounts.text
    assert '<button type="submit" name="user" value="alice">' in accounts.text
    assert '<button type="submit" name="user" value="bob">' in accounts.text
    assert "<b>tobira</b>" not in accounts.text and "&lt;b&gt;tobira&lt;/b&gt;" in accounts.text
    consent = client.get(f"/miauth/{session}", params={**query, "user": "alice"}).text
    assert '<img class="icon" src="https://app.test/icon.png"' in consent
    assert "Read account <code>read:account</code>" in consent
    assert "Write drive <code>write:drive</code>" in consent
    assert "https://app.test/cb?x=1&amp;y=2" in consent
    assert f'<form method="post" action="/miauth/{session}/accept">' in consent
    assert '<input type="hidden" name="user" value="alice">' in consent
    assert f'<form method="post" action="/miauth/{session}/deny">' in consent
    assert "ignored" not in consent
    bare = client.get(f"/miauth/{session}", params={"user": "alice"}).text
    assert "<img" not in bare
    assert "No permissions" in bare


@pytest.mark.parametrize(
    ("raw", "granted"),
    [
        pytest.param("read:account,write:notes", ("read:account", "write:notes"), id="two"),
        pytest.param("read:account, write:notes", ("read:account",), id="space-after-comma"),
        pytest.param(
            "read:account,bogus,write:admin:abuse-report:notification-recipient",
            ("read:account",),
            id="unknown",
        ),
        pytest.param("READ:ACCOUNT", (), id="case"),
        pytest.param("read:account,", ("read:account",), id="trailing-comma"),
        pytest.param("", (), id="empty"),
        pytest.param(None, (), id="absent"),
    ],
)
def test_permissions_are_filtered_silently(
    client: httpx.Client, server: RunningStandin, raw: str | None, granted: tuple[str, ...]
) -> None:
    session = new_session()
    query = {"callback": "https://app.test/cb"} | ({"permission": raw} if raw is not None else {})
    assert approve(client, session, query).status_code == 303
    token = next(t for t in server.state.tokens.values() if t.session == session)
    assert token.permissions == granted


def test_identity_only_token_gets_the_user_but_no_endpoint(client: httpx.Client) -> None:
    session = new_session()
    approve(client, session, {"callback": "https://app.test/cb", "permission": ""})
    checked = client.post(f"/api/miauth/{session}/check", json={}).json()
    assert checked["user"]["username"] == "alice"
    answer = client.post("/api/i", json={"i": checked["token"]})
    assert (answer.status_code, answer.json()) == (403, PERMISSION_DENIED)


@pytest.mark.parametrize(
    ("change", "stored"),
    [
        pytest.param({"name": "n" * 128}, True, id="name-128"),
        pytest.param({"name": "n" * 129}, False, id="name-129"),
        pytest.param({"icon": "https://app.test/" + "i" * 495}, True, id="icon-512"),
        pytest.param({"icon": "https://app.test/" + "i" * 496}, False, id="icon-513"),
        pytest.param({"permission": "read:account,read:account"}, False, id="permission-twice"),
    ],
)
def test_failed_approval_stores_nothing_but_still_redirects(
    client: httpx.Client, server: RunningStandin, change: dict[str, str], stored: bool
) -> None:
    session = new_session()
    answer = approve(client, session, {"callback": "https://app.test/cb", **change})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"https://app.test/cb?session={session}"
    assert client.post(f"/api/miauth/{session}/check", json={}).json()["ok"] is stored


def test_session_ids_over_128_characters_fail(client: httpx.Client) -> None:
    for session, stored in (("s" * 128, True), ("s" * 129, False)):
        assert approve(client, session, {"callback": "https://app.test/cb"}).status_code == 303
        assert client.post(f"/api/miauth/{session}/check", json={}).json()["ok"] is stored


def test_approval_without_callback_shows_a_page(client: httpx.Client) -> None:
    session = new_session()
    answer = approve(client, session, {"name": "cli"})
    assert (answer.status_code, "location" in answer.headers) == (200, False)
    assert "Access granted" in answer.text
    assert client.post(f"/api/miauth/{session}/check", json={}).json()["ok"] is True


@pytest.mark.parametrize(
    "callback",
    [
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("JavaScript:alert(1)", id="javascript-mixed-case"),
        pytest.param(" javascript:alert(1)", id="javascript-leading-space"),
        pytest.param("java\tscript:alert(1)", id="javascript-tab"),
        pytest.param("file:///etc/passwd", id="file"),
        pytest.param("data:text/html,<script>alert(1)</script>", id="data"),
        pytest.param("mailto:a@app.test", id="mailto"),
        pytest.param("tel:+81000", id="tel"),
        pytest.param("vbscript:msgbox", id="vbscript"),
        pytest.param("/relative/callback", id="relative"),
        pytest.param("https:///no-host", id="no-host"),
    ],
)
def test_refused_callbacks(client: httpx.Client, server: RunningStandin, callback: str) -> None:
    session = new_session()
    page = client.get(f"/miauth/{session}", params={"callback": callback, "user": "alice"})
    assert page.status_code == 400
    assert "Invalid callback" in page.text
    assert "/accept" not in page.text
    accepted = client.post(f"/miauth/{session}/accept", data={"user": "alice"})
    assert (accepted.status_code, "location" in accepted.headers) == (400, False)
    assert not [t for t in server.state.tokens.values() if t.session == session]


def test_accept_needs_the_consent_page_and_a_known_account(client: httpx.Client) -> None:
    session = new_session()
    assert client.post(f"/miauth/{session}/accept", data={"user": "alice"}).status_code == 400
    client.get(f"/miauth/{session}", params={"callback": "https://app.test/cb"})
    assert client.post(f"/miauth/{session}/accept", data={"user": "mallory"}).status_code == 400
    assert client.post(f"/miauth/{session}/accept").status_code == 400
    assert client.post(f"/api/miauth/{session}/check", json={}).json() == {"ok": False}


def test_permission_words() -> None:
    assert describe_permission("write:admin:delete-account") == "Write admin: delete account"
    assert requested_permissions("write:notes,read:account") == ["write:notes", "read:account"]


@given(
    st.lists(st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=8)), max_size=6),
    st.text(min_size=1, max_size=40),
)
def test_callback_gets_exactly_one_session_and_keeps_the_rest(
    pairs: list[tuple[str, str]], session: str
) -> None:
    url = callback_with_session("https://app.test/cb?" + urlencode(pairs), session)
    result = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    assert [value for key, value in result if key == "session"] == [session]
    kept = [pair for pair in parse_qsl(urlencode(pairs), keep_blank_values=True) if pair[0] != "session"]
    assert [pair for pair in result if pair[0] != "session"] == kept


# -- the API pipeline --------------------------------------------------------------------------------------


API_ERRORS = [
    pytest.param("i", None, {}, 401, CREDENTIAL_REQUIRED, 'Bearer realm="Misskey"', id="no-credential"),
    pytest.param("i", None, {"i": None}, 401, CREDENTIAL_REQUIRED, 'Bearer realm="Misskey"', id="null-i"),
    pytest.param("i", None, {"i": "x" * 32}, 401, AUTHENTICATION_FAILED, AUTH_FAILED_HEADER, id="bad-token"),
    pytest.param("i", None, {"i": ""}, 401, AUTHENTICATION_FAILED, AUTH_FAILED_HEADER, id="empty-token"),
    pytest.param(
        "notes/create",
        ("read:account",),
        {"text": "hi"},
        403,
        PERMISSION_DENIED,
        SCOPE_HEADER,
        id="permission-missing",
    ),
    pytest.param(
        "i/apps",
        tuple(ALL_PERMISSIONS),
        {},
        400,
        ACCESS_DENIED,
        'Bearer realm="Misskey", error="invalid_request", error_description="Access denied."',
        id="secure-with-app-token",
    ),
    pytest.param("i/apps", None, {}, 400, ACCESS_DENIED, None, id="secure-without-credential"),
    pytest.param(
        "admin/meta",
        ("read:admin:meta",),
        {},
        403,
        error(
            "ROLE_PERMISSION_DENIED",
            "You are not assigned to a moderator role.",
            "d33d5333-db36-423d-a8f9-1a2b9549da41",
            kind="permission",
        ),
        None,
        id="admin-not-moderator",
    ),
    pytest.param(
        "notes/create",
        ("write:notes",),
        {"visibility": "public"},
        400,
        error(
            "INVALID_PARAM",
            "Invalid param.",
            "3d81ceae-475f-4600-b2a8-2bc116157532",
            param="#/then/required",
            reason="must have required property 'text'",
        ),
        None,
        id="note-without-text",
    ),
    pytest.param(
        "notes/create",
        ("write:notes",),
        {"text": " \n "},
        400,
        error(
            "INVALID_PARAM",
            "Invalid param.",
            "3d81ceae-475f-4600-b2a8-2bc116157532",
            param="#/then/properties/text/pattern",
            reason='must match pattern "[^\\s]+"',
        ),
        None,
        id="note-blank-text",
    ),
    pytest.param(
        "notes/create",
        ("write:notes",),
        {"text": "x", "fileIds": ["nope"]},
        400,
        error("NO_SUCH_FILE", "Some files are not found.", "b6992544-63e7-67f0-fa7f-32444b1b5306"),
        None,
        id="note-unknown-file",
    ),
    pytest.param(
        "notes/timeline",
        ("read:account",),
        {"limit": 101},
        400,
        error(
            "INVALID_PARAM",
            "Invalid param.",
            "3d81ceae-475f-4600-b2a8-2bc116157532",
            param="#/properties/limit/maximum",
            reason="must be <= 100",
        ),
        None,
        id="timeline-limit",
    ),
]


@pytest.mark.parametrize(("endpoint", "granted", "body", "status", "expected", "header"), API_ERRORS)
def test_api_errors(
    client: httpx.Client,
    server: RunningStandin,
    endpoint: str,
    granted: tuple[str, ...] | None,
    body: dict[str, object],
    status: int,
    expected: object,
    header: str | None,
) -> None:
    if granted is not None:
        body = {**body, "i": token_for(server, *granted)}
    answer = client.post(f"/api/{endpoint}", json=body)
    assert (answer.status_code, answer.json()) == (status, expected)
    if header is not None:
        assert answer.headers["www-authenticate"] == header


@pytest.mark.parametrize(
    ("request_args", "status", "expected"),
    [
        pytest.param(
            {"method": "POST", "url": "/api/no/such?x=1", "json": {}},
            404,
            {"message": "Route POST:/api/no/such?x=1 not found", "error": "Not Found", "statusCode": 404},
            id="unknown-endpoint",
        ),
        pytest.param(
            {"method": "GET", "url": "/api/no/such"},
            404,
            error("UNKNOWN_API_ENDPOINT", "Unknown API endpoint.", "2ca3b769-540a-4f08-9dd5-b5a825b6d0f1"),
            id="get-unknown-endpoint",
        ),
        pytest.param({"method": "GET", "url": "/api/i"}, 405, None, id="get-post-endpoint"),
        pytest.param(
            {
                "method": "POST",
                "url": "/api/i",
                "content": b"{nope",
                "headers": {"Content-Type": "application/json"},
            },
            400,
            {
                "statusCode": 400,
                "code": "FST_ERR_CTP_INVALID_JSON_BODY",
                "error": "Bad Request",
                "message": "Body is not valid JSON but content-type is set to 'application/json'",
            },
            id="invalid-json",
        ),
        pytest.param(
            {"method": "POST", "url": "/api/i", "data": {"i": "x"}},
            415,
            {
                "statusCode": 415,
                "code": "FST_ERR_CTP_INVALID_MEDIA_TYPE",
                "error": "Unsupported Media Type",
                "message": "Unsupported Media Type: application/x-www-form-urlencoded",
            },
            id="form-encoded",
        ),
        pytest.param(
            {
                "method": "POST",
                "url": "/api/meta",
                "content": b"[]",
                "headers": {"Content-Type": "application/json"},
            },
            400,
            error(
                "INVALID_PARAM",
                "Invalid param.",
                "3d81ceae-475f-4600-b2a8-2bc116157532",
                param="#/type",
                reason="must be object",
            ),
            id="array-body",
        ),
        pytest.param(
            {"method": "POST", "url": "/api/meta", "json": {"x": "y" * (1024 * 1024)}},
            413,
            {
                "statusCode": 413,
                "code": "FST_ERR_CTP_BODY_TOO_LARGE",
                "error": "Payload Too Large",
                "message": "Request body is too large",
            },
            id="too-large",
        ),
    ],
)
def test_framework_errors(
    client: httpx.Client, request_args: dict[str, Any], status: int, expected: object
) -> None:
    answer = client.request(**request_args)
    assert answer.status_code == status
    if expected is None:
        assert answer.content == b""
    else:
        assert answer.json() == expected


def test_revoked_token_fails_authentication(client: httpx.Client, server: RunningStandin) -> None:
    token = token_for(server, "read:account")
    assert client.post("/api/i", json={"i": token}).status_code == 200
    server.state.revoke(token)
    answer = client.post("/api/i", json={"i": token})
    assert (answer.status_code, answer.json()) == (401, AUTHENTICATION_FAILED)
    assert server.state.is_revoked(token)


def test_bearer_header_wins_over_the_body(client: httpx.Client, server: RunningStandin) -> None:
    token = token_for(server, "read:account")
    bearer = client.post("/api/i", json={"i": "wrong"}, headers={"Authorization": f"Bearer {token}"})
    assert bearer.status_code == 200
    lower_case = client.post("/api/i", json={"i": token}, headers={"Authorization": "bearer wrong"})
    assert lower_case.status_code == 200  # not a Bearer header to Misskey: the body's i is used


@pytest.mark.parametrize("i", [5, ["t"], {"t": 1}, True], ids=["number", "array", "object", "boolean"])
def test_non_string_i_never_gets_an_answer(client: httpx.Client, i: object) -> None:
    with pytest.raises(httpx.ReadTimeout):
        client.post("/api/i", json={"i": i}, timeout=0.3)


def test_calls_are_recorded_with_headers_and_body_keys(client: httpx.Client, server: RunningStandin) -> None:
    token = token_for(server, "read:account")
    client.post("/api/i", json={"i": token, "extra": 1}, headers={"Cookie": "a=b", "X-Test": "yes"})
    call = server.state.calls_to("i")[-1]
    assert (call.method, call.endpoint, call.token, call.body_keys) == ("POST", "i", token, ("i", "extra"))
    assert (call.headers["cookie"], call.headers["x-test"]) == ("a=b", "yes")
    client.post("/api/nothing/here", json={})
    assert server.state.calls[-1].endpoint == "nothing/here"


@pytest.mark.parametrize(
    ("endpoint", "status", "expected"),
    [
        pytest.param("notes/mentions", 200, [], id="array"),
        pytest.param("i/update", 200, {}, id="object"),
        pytest.param("notes/delete", 204, None, id="no-content"),
        pytest.param("ping", 200, {}, id="no-credential"),
    ],
)
def test_other_endpoints_answer_the_right_empty_shape(
    client: httpx.Client, server: RunningStandin, endpoint: str, status: int, expected: object
) -> None:
    answer = client.post(f"/api/{endpoint}", json={"i": token_for(server, *ALL_PERMISSIONS)})
    assert answer.status_code == status
    assert (answer.json() if expected is not None else answer.content) == (
        expected if expected is not None else b""
    )


def test_the_endpoint_table_is_complete() -> None:
    table = endpoints()
    assert len(table) == 434
    assert sum(endpoint.secure for endpoint in table.values()) == 52
    assert table["notes/create"].permission == "write:notes"
    assert table["i/revoke-token"].secure
    assert len(permissions()) == 85


# -- implemented endpoints ---------------------------------------------------------------------------------


def test_notes_and_timeline(serve: Callable[..., AbstractContextManager[RunningStandin]]) -> None:
    with serve() as fresh, httpx.Client(base_url=fresh.url) as http:
        token = token_for(fresh, "write:notes", "read:account")
        created = [http.post("/api/notes/create", json={"i": token, "text": f"  note {n} "}) for n in (1, 2)]
        assert [answer.status_code for answer in created] == [200, 200]
        note = created[0].json()["createdNote"]
        assert (note["text"], note["visibility"], note["userId"]) == ("note 1", "public", "9x1alice00")
        assert note["user"]["username"] == "alice"
        timeline = http.post("/api/notes/timeline", json={"i": token}).json()
        assert [n["text"] for n in timeline] == ["note 2", "note 1"]
        assert [
            n["text"] for n in http.post("/api/notes/timeline", json={"i": token, "limit": 1}).json()
        ] == ["note 2"]
        assert http.post("/api/i", json={"i": token}).json()["notesCount"] == 2


def test_rate_limit_on_notes_create(serve: Callable[..., AbstractContextManager[RunningStandin]]) -> None:
    with serve(rate_limit_notes_create=2) as limited, httpx.Client(base_url=limited.url) as http:
        token = token_for(limited, "write:notes")
        statuses = [
            http.post("/api/notes/create", json={"i": token, "text": "x"}).status_code for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        refused = http.post("/api/notes/create", json={"i": token, "text": "x"})
        body = refused.json()["error"]
        assert (refused.status_code, body["code"], body["id"]) == (
            429,
            "RATE_LIMIT_EXCEEDED",
            "d5826d14-3982-4d2e-8011-b9e9f02499ef",
        )
        info = body["info"]
        assert (info["remaining"], info["total"], info["reset"]) == (0, 2, info["resetMs"] // 1000)
        assert 3590 <= int(refused.headers["retry-after"]) <= 3600
        assert "www-authenticate" not in refused.headers
        other = token_for(limited, "write:notes", user="bob")
        assert http.post("/api/notes/create", json={"i": other, "text": "x"}).status_code == 200


def test_drive_upload(client: httpx.Client, server: RunningStandin) -> None:
    token = token_for(server, "write:drive", "write:notes")
    picture = png(3, 2)
    answer = client.post(
        "/api/drive/files/create",
        data={"i": token, "comment": "hello", "isSensitive": "true"},
        files={"file": ("pic.png", picture, "application/octet-stream")},
    )
    assert answer.status_code == 200, answer.text
    file = answer.json()
    assert (file["name"], file["type"], file["size"], file["md5"]) == (
        "pic.png",
        "image/png",
        len(picture),
        hashlib.md5(picture, usedforsecurity=False).hexdigest(),
    )
    assert (file["comment"], file["isSensitive"], file["properties"]) == (
        "hello",
        True,
        {"width": 3, "height": 2},
    )
    assert client.get(file["url"]).content == picture
    note = client.post("/api/notes/create", json={"i": token, "fileIds": [file["id"]]})
    assert note.json()["createdNote"]["files"][0]["id"] == file["id"]
    assert server.state.calls_to("drive/files/create")[-1].body_keys == ("i", "comment", "isSensitive")


def test_drive_upload_with_bearer_and_a_nameless_blob(client: httpx.Client, server: RunningStandin) -> None:
    token = token_for(server, "write:drive")
    answer = client.post(
        "/api/drive/files/create",
        headers={"Authorization": f"Bearer {token}"},
        files={"file": ("blob", b"plain text", "text/plain")},
    )
    assert answer.status_code == 200
    assert (answer.json()["name"], answer.json()["type"]) == ("untitled", "application/octet-stream")


UPLOAD_ERRORS = [
    pytest.param(lambda token: {"json": {"i": token}}, 400, None, id="json-body"),
    pytest.param(lambda token: {"data": {"i": token}, "files": {"x": (None, "1")}}, 400, None, id="no-file"),
    pytest.param(
        lambda token: {"data": {"i": token}}, 415, "FST_ERR_CTP_INVALID_MEDIA_TYPE", id="form-encoded"
    ),
    # Fastify's request.file() only sees the fields sent before the file.
    pytest.param(
        lambda token: {"files": {"file": ("a.bin", b"a"), "i": (None, token)}},
        401,
        "CREDENTIAL_REQUIRED",
        id="i-after-the-file",
    ),
    pytest.param(
        lambda token: {"data": {"i": token, "isSensitive": "yes"}, "files": {"file": ("a.bin", b"a")}},
        400,
        "INVALID_PARAM",
        id="not-a-boolean",
    ),
]


@pytest.mark.parametrize(("request_args", "status", "code"), UPLOAD_ERRORS)
def test_drive_upload_errors(
    client: httpx.Client,
    server: RunningStandin,
    request_args: Callable[[str], dict[str, Any]],
    status: int,
    code: str | None,
) -> None:
    answer = client.post("/api/drive/files/create", **request_args(token_for(server, "write:drive")))
    assert answer.status_code == status
    if code is None:
        assert answer.content == b""
    else:
        body = answer.json()
        assert (
            body["code"] if status == 415 else body["error"]["code"]
        ) == code  # Fastify's shape or Misskey's


def test_revoke_token_is_secure_on_2026_5_4(client: httpx.Client, server: RunningStandin) -> None:
    token = token_for(server, *ALL_PERMISSIONS)
    answer = client.post("/api/i/revoke-token", json={"i": token, "token": token})
    assert (answer.status_code, answer.json()) == (400, ACCESS_DENIED)
    assert client.post("/api/i", json={"i": token}).status_code == 200


def test_newer_servers_let_a_token_revoke_itself(
    serve: Callable[..., AbstractContextManager[RunningStandin]],
) -> None:
    with serve(revoke_token_self=True) as newer, httpx.Client(base_url=newer.url) as http:
        mine, others = token_for(newer, "read:account"), token_for(newer, "read:account", user="bob")
        assert http.post("/api/i/revoke-token", json={"i": mine, "token": others}).status_code == 204
        assert not newer.state.is_revoked(others)  # only the caller's own tokens
        answer = http.post("/api/i/revoke-token", json={"i": mine, "token": mine})
        assert (answer.status_code, answer.content) == (204, b"")
        assert newer.state.is_revoked(mine)
        assert http.post("/api/i", json={"i": mine}).json() == AUTHENTICATION_FAILED


REVOKE = '<button type="submit">Revoke</button>'


def test_settings_apps_lists_live_app_tokens_and_revokes_them(
    serve: Callable[..., AbstractContextManager[RunningStandin]],
) -> None:
    with serve() as fresh, httpx.Client(base_url=fresh.url) as http:
        assert "<p>No app has access to an account.</p>" in http.get("/settings/apps").text
        kept = fresh.state.issue_token("alice", ["read:account"], name="Kept <app>")
        gone = fresh.state.issue_token("bob", ["read:account"], name="tobira")
        page = http.get("/settings/apps")
        assert page.status_code == 200
        assert (
            f"<ul><li><strong>Kept &lt;app&gt;</strong> — @alice"
            f'<form method="post" action="/settings/apps/{kept.id}/revoke">{REVOKE}</form></li>'
            f"<li><strong>tobira</strong> — @bob"
            f'<form method="post" action="/settings/apps/{gone.id}/revoke">{REVOKE}</form></li></ul>'
        ) in page.text
        revoked = http.post(f"/settings/apps/{gone.id}/revoke")
        assert (revoked.status_code, revoked.headers["location"]) == (303, "/settings/apps")
        assert http.post("/api/i", json={"i": gone.token}).json() == AUTHENTICATION_FAILED
        assert http.post("/api/i", json={"i": kept.token}).status_code == 200
        assert "tobira" not in http.get("/settings/apps").text.split("<h1>Apps</h1>")[1]


# -- pictures and the runner -------------------------------------------------------------------------------


def test_avatars_are_pictures(client: httpx.Client, server: RunningStandin) -> None:
    token = token_for(server, "read:account")
    avatar = client.get(client.post("/api/i", json={"i": token}).json()["avatarUrl"])
    assert (avatar.status_code, avatar.headers["content-type"]) == (200, "image/png")


def test_custom_users_and_base_url() -> None:
    carol = StandinUser(
        id="9x1carol00", username="carol", avatar_url="https://cdn.test/c.png", is_moderator=True
    )
    config = StandinConfig(base_url="http://stand-in.test", users=[carol])
    with run_standin_in_thread(config) as running, httpx.Client(base_url=running.url) as http:
        assert running.port != 0
        assert running.state.config.base_url == "http://stand-in.test"
        token = token_for(running, "read:account", "read:admin:meta", user="carol")
        me = http.post("/api/i", json={"i": token}).json()
        assert (me["avatarUrl"], me["isModerator"], me["name"]) == ("https://cdn.test/c.png", True, None)
        assert http.post("/api/admin/meta", json={"i": token}).status_code == 200
        assert http.post("/api/meta", json={}).json()["uri"] == "http://stand-in.test"
    with socket.socket() as probe:
        assert probe.connect_ex((running.host, running.port)) != 0  # stopped and the port released


def test_the_runner_serves_https_with_the_certificate_it_is_given(tmp_path: Path) -> None:
    """As the network lab runs it: https with a certificate of a test CA, checked against the name."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    with run_standin_in_thread(SERVER_CONFIG, certfile=cert_file, keyfile=key_file) as running:
        assert running.url == f"https://127.0.0.1:{running.port}"
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        with httpx.Client(verify=trusting) as client:
            answer = client.post(f"{running.url}/api/meta", json={})
        assert answer.status_code == 200
        assert answer.json()["uri"] == running.url
        with httpx.Client(verify=ssl.create_default_context()) as client, pytest.raises(httpx.ConnectError):
            client.post(f"{running.url}/api/meta", json={})
