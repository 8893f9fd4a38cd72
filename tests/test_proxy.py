"""The API proxy against the stand-in, both as real servers: the right `i`, never the client's."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from tests.conftest import Browser, raw_request

CLIENT_TOKEN = "clientSuppliedToken0123456789abc"


@pytest.fixture
def signed_in(browser: Browser) -> Browser:
    browser.sign_in("alice")
    return browser


def last_call(browser: Browser, endpoint: str):  # type: ignore[no-untyped-def]
    return [call for call in browser.standin.state.calls if call.endpoint == endpoint][-1]


def test_proxy_sets_the_session_token_and_never_the_clients(signed_in: Browser) -> None:
    signed_in.client.cookies.set("other", CLIENT_TOKEN)
    answer = signed_in.api(
        "notes/create",
        {"text": "hello from tobira", "i": CLIENT_TOKEN},
        headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["createdNote"]["text"] == "hello from tobira"
    call = last_call(signed_in, "notes/create")
    assert call.token == signed_in.standin.state.token_of("alice")
    headers = {name.lower() for name in call.headers}
    assert "authorization" not in headers
    assert "cookie" not in headers
    assert CLIENT_TOKEN not in repr(call)
    timeline = signed_in.api("notes/timeline", {"limit": 10})
    assert timeline.status_code == 200
    assert timeline.json()[0]["text"] == "hello from tobira"


def test_proxy_relays_misskey_errors_as_they_are(signed_in: Browser) -> None:
    answer = signed_in.api("notes/create", {})  # no text: INVALID_PARAM
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "INVALID_PARAM"


def test_permission_the_token_lacks_is_relayed(signed_in: Browser) -> None:
    answer = signed_in.api("following/create", {"userId": "x"})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "PERMISSION_DENIED"


def test_upload_is_forwarded_as_multipart_with_the_token(signed_in: Browser) -> None:
    content = bytes(range(256)) * 64
    answer = signed_in.api(
        "drive/files/create",
        files={"file": ("pic.bin", content, "application/octet-stream")},
        data={"i": CLIENT_TOKEN, "name": "pic.bin"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["size"] == len(content)
    assert body["md5"] == hashlib.md5(content).hexdigest()
    assert last_call(signed_in, "drive/files/create").token == signed_in.standin.state.token_of("alice")


@pytest.mark.parametrize(
    ("endpoint", "status", "code"),
    [
        ("admin/meta", 403, "ENDPOINT_NOT_ALLOWED"),
        ("i/delete-account", 403, "ENDPOINT_NOT_ALLOWED"),
        ("i/regenerate-token", 403, "ENDPOINT_NOT_ALLOWED"),
        ("miauth/gen-token", 403, "ENDPOINT_NOT_ALLOWED"),
        ("app/create", 403, "ENDPOINT_NOT_ALLOWED"),
        ("i/revoke-token", 403, "ENDPOINT_NOT_ALLOWED"),
        ("notes/../admin/meta", 400, "INVALID_ENDPOINT"),
        ("notes%2Fcreate", 400, "INVALID_ENDPOINT"),
        ("Notes/Create", 400, "INVALID_ENDPOINT"),
    ],
)
def test_refused_endpoints_never_reach_the_instance(
    signed_in: Browser, endpoint: str, status: int, code: str
) -> None:
    before = len(signed_in.standin.state.calls)
    headers = {
        "Origin": signed_in.tobira,
        "Content-Type": "application/json",
        "Cookie": f"tobira={signed_in.client.cookies['tobira']}",
    }
    got, body = raw_request(signed_in.tobira, f"POST /api/{endpoint} HTTP/1.1", headers, b"{}")
    assert (got, orjson.loads(body)["error"]["code"]) == (status, code)
    assert len(signed_in.standin.state.calls) == before


@pytest.mark.parametrize(
    ("headers", "content", "status", "code"),
    [
        ({"Origin": "https://evil.example"}, b"{}", 403, "CROSS_SITE_REQUEST"),
        ({"Origin": "null"}, b"{}", 403, "CROSS_SITE_REQUEST"),
        ({"Sec-Fetch-Site": "cross-site"}, b"{}", 403, "CROSS_SITE_REQUEST"),
        ({"Content-Type": "text/plain"}, b"{}", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"i=x", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"Content-Type": "application/json"}, b"[1,2]", 400, "INVALID_BODY"),
        ({"Content-Type": "application/json"}, b"{nope", 400, "INVALID_BODY"),
        (
            {"Content-Type": "application/json"},
            b'{"t":"' + b"x" * (2 * 1024 * 1024) + b'"}',
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ],
)
def test_refused_requests(
    signed_in: Browser, headers: dict[str, str], content: bytes, status: int, code: str
) -> None:
    before = len(signed_in.standin.state.calls)
    merged = {"Content-Type": "application/json", **headers}
    answer = signed_in.api("notes/create", content=content, headers=merged)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    assert len(signed_in.standin.state.calls) == before


def test_signed_out_proxy_is_401(browser: Browser) -> None:
    answer = browser.api("i")
    assert answer.status_code == 401
    assert set(answer.json()["error"]) == {"code", "message", "id"}
