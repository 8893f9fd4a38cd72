"""The hot paths below uvicorn's cycle (app.lanes), on the wire: a real tobira process, raw HTTP/1.1.

The lane must answer exactly as uvicorn and the ASGI app would: framing, keep-alive, pipelining, HEAD,
`Connection: close`, and every request it leaves to uvicorn (long or chunked bodies, encoded paths)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from app.lanes import header_lines
from tests.conftest import TobiraProcess, start_tobira


@pytest.fixture(scope="module")
def tobira(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TobiraProcess]:
    server = start_tobira(tmp_path_factory.mktemp("lanes"), TOBIRA_MAX_BODY_BYTES="1024")
    yield server
    server.stop()


def exchange(
    server: TobiraProcess, raw: bytes, answers: int = 1
) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Send `raw` on one connection; read `answers` answers (status line, headers, body) off it."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(raw)
        reader = connection.makefile("rb")
        return [read_answer(reader, head_only=b"HEAD " in raw and n == 0) for n in range(answers)]


def read_answer(reader: object, *, head_only: bool = False) -> tuple[bytes, dict[bytes, bytes], bytes]:
    status = reader.readline().rstrip()  # type: ignore[attr-defined]
    headers: dict[bytes, bytes] = {}
    while (line := reader.readline().rstrip()) != b"":  # type: ignore[attr-defined]
        name, _, value = line.partition(b":")
        headers[name.lower()] = value.strip()
    length = 0 if head_only else int(headers.get(b"content-length", b"0"))
    return status, headers, reader.read(length)  # type: ignore[attr-defined]


def request(path: str, *, method: str = "GET", headers: str = "", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body or method == "POST" else ""
    return f"{method} {path} HTTP/1.1\r\nHost: tobira\r\n{length}{headers}\r\n".encode() + body


def test_forward_authentication_answers_from_the_lane_with_id_date_and_length(tobira: TobiraProcess) -> None:
    ((status, headers, body),) = exchange(tobira, request("/auth/request"))
    assert status == b"HTTP/1.1 401 Unauthorized"
    assert headers[b"content-length"] == str(len(body)).encode() and body.startswith(b"<!doctype html>")
    assert len(headers[b"x-request-id"]) == 32 and b"date" in headers
    assert headers[b"location"].endswith(b"/login")
    assert headers[b"x-content-type-options"] == b"nosniff"


def test_pipelined_requests_are_answered_in_order(tobira: TobiraProcess) -> None:
    raw = (
        request("/auth/request")
        + request("/api/i", method="POST", headers="Content-Type: application/json\r\n", body=b"{}")
        + request("/healthz")
        + request("/auth/forward")
    )
    answers = exchange(tobira, raw, answers=4)
    assert [status.split(b" ")[1] for status, _, _ in answers] == [b"401", b"401", b"200", b"302"]
    assert b"CREDENTIAL_REQUIRED" in answers[1][2] or b"SIGNED_OUT" in answers[1][2]
    assert len({headers[b"x-request-id"] for _, headers, _ in answers}) == 4


def test_head_gets_the_headers_only(tobira: TobiraProcess) -> None:
    ((status, headers, _),) = exchange(
        tobira, request("/auth/request", method="HEAD") + request("/healthz"), 1
    )
    assert status.startswith(b"HTTP/1.1 401") and int(headers[b"content-length"]) > 0


def test_connection_close_is_honoured(tobira: TobiraProcess) -> None:
    address = urlsplit(tobira.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(request("/auth/request", headers="Connection: close\r\n"))
        reader = connection.makefile("rb")
        _, headers, _ = read_answer(reader)
        assert headers[b"connection"] == b"close"
        assert reader.read() == b""  # closed by tobira


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # Longer than the lane takes (TOBIRA_MAX_BODY_BYTES): uvicorn's cycle, then the proxy's answer.
        (
            request("/api/i", method="POST", headers="Content-Type: application/json\r\n", body=b" " * 2000),
            b"401",
        ),
        # Chunked: uvicorn's cycle too.
        (
            b"POST /api/i HTTP/1.1\r\nHost: tobira\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            b"401",
        ),
        # An encoded path is left to uvicorn, which decodes it; the proxy refuses the name as sent.
        (
            request(
                "/api/notes%2Fcreate", method="POST", headers="Content-Type: application/json\r\n", body=b"{}"
            ),
            b"400",
        ),
        (request("/api/i", method="GET"), b"405"),
    ],
)
def test_what_the_lane_leaves_to_uvicorn_is_answered_as_before(
    tobira: TobiraProcess, raw: bytes, status: bytes
) -> None:
    ((line, headers, body),) = exchange(tobira, raw)
    assert line.split(b" ")[1] == status, body
    assert b"x-request-id" in headers


def test_the_access_log_has_the_lanes_answers(tobira: TobiraProcess) -> None:
    exchange(tobira, request("/auth/forward?from=log"))
    assert '"GET /auth/forward?from=log HTTP/1.1" 302' in tobira.log()


@pytest.mark.parametrize("value", [b"a\r\nset-cookie: x=1", b"a\nb", b"a\rb"])
def test_no_header_can_split_an_answer(value: bytes) -> None:
    with pytest.raises(ValueError, match="line break"):
        header_lines([(b"x-test", value)])
    with pytest.raises(ValueError, match="line break"):
        header_lines([(value, b"ok")])
    assert header_lines([(b"a", b"1"), (b"b", b"2")]) == b"a: 1\r\nb: 2\r\n"
