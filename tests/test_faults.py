"""tobira against a misbehaving instance: each fault of the stand-in (`app.standin.faults`) on each path.

The paths: discovery (`POST /login` asks `api/meta` and nodeinfo), the callback (the one-shot
`api/miauth/SESSION/check`), and the API proxy (`api/notes/timeline`). Every fault must end in a clear error
within the time bound (502/504, a page for the browser or Misskey-shaped JSON for the proxy), with nothing
stored, no request repeated, no redirect followed, and the connection dropped rather than left open.

tobira runs with small bounds (2 s per request, 1 s to connect, 1 MiB per answer) and without its discovery
cache, so that every sign-in asks the instance again.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from app.errors import ErrorCode
from app.standin import RunningStandin
from app.standin.faults import Fault, FaultKind
from tests.conftest import Browser, TobiraProcess, session_param, start_tobira
from tests.faults_support import Hits, cpu_seconds, hung_up, open_fds, timed, wait_for

REQUEST_TIMEOUT = 2.0
TIME_BOUND = REQUEST_TIMEOUT + 1.5  # the request's bound, plus tobira's own work and a loaded machine
NODEINFO_DEADLINE = 4.0  # app.discovery waits this long for the optional nodeinfo, whatever the bound
MAX_RESPONSE_BYTES = 1024 * 1024
TIMELINE = "api/notes/timeline"
CHECK = "api/miauth/check"
RETRY_AFTER = (("Retry-After", "7"),)
MISSKEY_RATE_LIMITED = {
    "error": {
        "message": "Rate limit exceeded. Please try again later.",
        "code": "RATE_LIMIT_EXCEEDED",
        "id": "d5826d14-3982-4d2e-8011-b9e9f02499ef",
        "kind": "client",
    }
}
UNAVAILABLE = {"error": {"message": "Maintenance.", "code": "UNAVAILABLE", "id": "x", "kind": "server"}}
USER = {"id": "9x1alice00", "username": "alice", "host": None, "name": "Alice", "avatarUrl": None}

Expected = tuple[int, ErrorCode] | None  # status and code; None: the case does not apply on that path
Row = tuple[str, Fault, Expected, Expected]

BAD = (502, ErrorCode.INSTANCE_BAD_RESPONSE)
UNREACHABLE = (502, ErrorCode.INSTANCE_UNREACHABLE)
TIMEOUT = (504, ErrorCode.INSTANCE_TIMEOUT)
NOT_MISSKEY = (502, ErrorCode.NOT_MISSKEY)

# Rows: (id, fault, what tobira answers on the proxy and at the callback, what it answers in discovery).
# The faults every path must survive. Discovery calls a readable answer that is not Misskey's meta
# NOT_MISSKEY; an answer it cannot read at all (too large, endless) is INSTANCE_BAD_RESPONSE, and a server
# error or 429 means the server is unavailable right now (INSTANCE_UNREACHABLE).
TRANSPORT_FAULTS: list[Row] = [
    ("html", Fault(FaultKind.HTML), BAD, NOT_MISSKEY),
    ("html-502", Fault(FaultKind.HTML, status=502), BAD, UNREACHABLE),
    ("big-body", Fault(FaultKind.BIG_BODY), BAD, BAD),
    ("gzip-bomb", Fault(FaultKind.GZIP_BOMB), BAD, BAD),
    ("endless", Fault(FaultKind.ENDLESS), BAD, BAD),
    ("endless-header", Fault(FaultKind.ENDLESS_HEADER), BAD, BAD),
    ("gzip-endless", Fault(FaultKind.GZIP_ENDLESS), BAD, BAD),
    ("huge-headers", Fault(FaultKind.HUGE_HEADERS), BAD, BAD),
    ("redirect", Fault(FaultKind.REDIRECT), BAD, NOT_MISSKEY),
    ("redirect-302", Fault(FaultKind.REDIRECT, status=302), BAD, NOT_MISSKEY),
    ("drip-head", Fault(FaultKind.DRIP_HEAD), TIMEOUT, TIMEOUT),
    ("drip-body", Fault(FaultKind.DRIP_BODY), TIMEOUT, TIMEOUT),
    ("reset", Fault(FaultKind.RESET), UNREACHABLE, UNREACHABLE),
    ("close-after-headers", Fault(FaultKind.CLOSE_AFTER_HEADERS), UNREACHABLE, UNREACHABLE),
    ("length-over", Fault(FaultKind.LENGTH_OVER), TIMEOUT, TIMEOUT),
    ("drop", Fault(FaultKind.DROP), UNREACHABLE, UNREACHABLE),
]
# Answers that are well-formed HTTP but not what the protocol promises: errors at the callback and in
# discovery; the proxy relays JSON of any shape and Misskey's own errors (tested on their own below).
SHAPE_FAULTS: list[Row] = [
    ("json-array", Fault(FaultKind.JSON, body=[]), BAD, NOT_MISSKEY),
    ("json-string", Fault(FaultKind.JSON, body="ok"), BAD, NOT_MISSKEY),
    (
        "json-ok-not-bool",
        Fault(FaultKind.JSON, body={"ok": "true", "token": "t" * 32, "user": USER}),
        BAD,
        None,
    ),
    ("missing-token", Fault(FaultKind.JSON, body={"ok": True, "user": USER}), BAD, None),
    ("empty-token", Fault(FaultKind.JSON, body={"ok": True, "token": "", "user": USER}), BAD, None),
    ("token-not-string", Fault(FaultKind.JSON, body={"ok": True, "token": 12, "user": USER}), BAD, None),
    ("missing-user", Fault(FaultKind.JSON, body={"ok": True, "token": "t" * 32}), BAD, None),
    (
        "meta-without-version",
        Fault(FaultKind.JSON, body={"name": "x", "features": {"miauth": True}}),
        None,
        NOT_MISSKEY,
    ),
    (
        "429",
        Fault(FaultKind.JSON, status=429, body=MISSKEY_RATE_LIMITED, headers=RETRY_AFTER),
        BAD,
        UNREACHABLE,
    ),
    ("503", Fault(FaultKind.JSON, status=503, body=UNAVAILABLE, headers=RETRY_AFTER), BAD, UNREACHABLE),
    ("html-503", Fault(FaultKind.HTML, status=503, headers=RETRY_AFTER), BAD, UNREACHABLE),
]


def cases(table: list[Row], column: int) -> list[object]:
    """The table's rows that have an expectation in `column`."""
    return [pytest.param(row[1], row[column], id=row[0]) for row in table if row[column] is not None]


@pytest.fixture(scope="module")
def tobira(tmp_path_factory: pytest.TempPathFactory, standin: RunningStandin) -> Iterator[TobiraProcess]:
    """tobira with small bounds and no discovery cache (this module's own; conftest's `browser` uses it)."""
    server = start_tobira(
        tmp_path_factory.mktemp("tobira-faults"),
        TOBIRA_DEV_INSTANCES=standin.url,
        TOBIRA_PERMISSIONS="read:account,write:notes",
        TOBIRA_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
        TOBIRA_CONNECT_TIMEOUT="1",
        TOBIRA_MAX_RESPONSE_BYTES=str(MAX_RESPONSE_BYTES),
        TOBIRA_DISCOVERY_CACHE_SECONDS="0",
    )
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_faults(standin: RunningStandin) -> Iterator[None]:
    standin.state.faults.clear()
    yield
    standin.state.faults.clear()


@pytest.fixture
def signed_in(browser: Browser) -> Browser:
    browser.sign_in("alice")
    return browser


def set_cookie_names(answer: httpx.Response) -> set[str]:
    return {value.split("=", 1)[0] for name, value in answer.headers.multi_items() if name == "set-cookie"}


def page_code(answer: httpx.Response) -> str | None:
    """The error code an HTML error page shows."""
    found = re.search(r"Error code: <code>([A-Z_]+)</code>", answer.text)
    return found.group(1) if found else None


def assert_misskey_error(answer: httpx.Response, status: int, code: ErrorCode) -> None:
    assert (answer.status_code, answer.headers["content-type"]) == (status, "application/json")
    error = answer.json()["error"]
    assert set(error) == {"code", "message", "id"}
    assert (error["code"], error["id"]) == (code, code.id)


# --- discovery: POST /login ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "expected"), cases(TRANSPORT_FAULTS + SHAPE_FAULTS, 3))
def test_discovery_fault_is_an_error_page(
    browser: Browser, standin: RunningStandin, fault: Fault, expected: tuple[int, ErrorCode]
) -> None:
    standin.state.faults["api/meta"] = fault
    hits = Hits(standin)
    with timed() as took:
        answer = browser.start()
    assert (answer.status_code, page_code(answer)) == expected
    assert took.seconds < TIME_BOUND
    assert "location" not in answer.headers
    assert set_cookie_names(answer) == set()
    assert answer.headers["content-type"].startswith("text/html")
    assert 'action="/login"' in answer.text  # the form again, to try another server or later
    assert "nginx" not in answer.text  # never the instance's own page
    # meta is read-only, so it may be sent once more when a kept-alive connection closed before answering.
    assert hits["api/meta"] <= (2 if fault.kind is FaultKind.DROP else 1)
    assert hits["nodeinfo"] <= 3
    assert hits["moved"] == 0
    assert hung_up(standin)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault(FaultKind.HTML), id="html"),
        pytest.param(Fault(FaultKind.JSON, body={"software": "nope"}), id="wrong-shape"),
        pytest.param(Fault(FaultKind.ENDLESS), id="endless"),
        pytest.param(Fault(FaultKind.RESET), id="reset"),
        pytest.param(Fault(FaultKind.DRIP_BODY), id="drip-body"),
    ],
)
def test_nodeinfo_fault_does_not_stop_a_sign_in(
    browser: Browser, standin: RunningStandin, fault: Fault
) -> None:
    standin.state.faults["nodeinfo"] = fault
    hits = Hits(standin)
    with timed() as took:
        answer = browser.start()
    assert answer.status_code == 303
    assert urlsplit(answer.headers["location"]).netloc == urlsplit(standin.url).netloc
    # nodeinfo is optional: discovery gives up on it after its own deadline, not the request's bound.
    assert took.seconds < NODEINFO_DEADLINE + 1.5
    assert hits["api/meta"] == 1
    assert hits["nodeinfo"] <= 3
    assert hung_up(standin)


def test_set_cookie_from_meta_reaches_nobody(browser: Browser, standin: RunningStandin) -> None:
    standin.state.faults["api/meta"] = Fault(
        FaultKind.EXTRA_HEADERS, headers=(("Set-Cookie", "mk=1; Path=/"),)
    )
    first = browser.start()
    assert first.status_code == 303
    assert set_cookie_names(first) == {"tobira-signin"}
    assert browser.start().status_code == 303
    assert "cookie" not in standin.state.calls_to("meta")[-1].headers


# --- the callback: the one-shot /check ----------------------------------------------------------------


def approved_callback(browser: Browser) -> str:
    started = browser.start()
    assert started.status_code == 303, started.text
    return browser.approve(started.headers["location"], "alice")


@pytest.mark.parametrize(("fault", "expected"), cases(TRANSPORT_FAULTS + SHAPE_FAULTS, 2))
def test_check_fault_asks_to_sign_in_again(
    browser: Browser, standin: RunningStandin, fault: Fault, expected: tuple[int, ErrorCode]
) -> None:
    callback_url = approved_callback(browser)
    session = session_param(callback_url)
    standin.state.faults[CHECK] = fault
    hits = Hits(standin)
    with timed() as took:
        answer = browser.callback(callback_url)
    assert (answer.status_code, page_code(answer)) == expected
    assert took.seconds < TIME_BOUND
    assert "Please sign in again." in answer.text
    assert 'action="/login"' in answer.text
    assert "nginx" not in answer.text
    assert "tobira" not in set_cookie_names(answer)
    assert "tobira" not in browser.client.cookies
    assert browser.session().status_code == 401
    assert standin.state.check_count(session) == 1
    assert (hits[CHECK], hits["moved"]) == (1, 0)
    assert hung_up(standin)
    # Reloading the page does not ask again: the sign-in under way is gone.
    standin.state.faults.clear()
    again = browser.callback(callback_url)
    assert (again.status_code, page_code(again)) == (400, ErrorCode.NO_SIGN_IN_PENDING)
    assert standin.state.check_count(session) == 1


def test_check_that_marks_the_session_used_then_drops_is_never_retried(
    browser: Browser, standin: RunningStandin
) -> None:
    # Over a connection that earlier requests left open: a client that takes the drop for a stale
    # keep-alive connection and sends the request again would check a second time.
    callback_url = approved_callback(browser)
    session = session_param(callback_url)
    standin.state.faults[CHECK] = Fault(FaultKind.DROP)
    answer = browser.callback(callback_url)
    assert (answer.status_code, page_code(answer)) == UNREACHABLE
    assert standin.state.check_count(session) == 1
    token = standin.state.token_of("alice")
    assert token is not None and standin.state.tokens[token].fetched  # the server did its part
    assert browser.session().status_code == 401


def test_set_cookie_from_check_reaches_nobody(browser: Browser, standin: RunningStandin) -> None:
    callback_url = approved_callback(browser)
    cookie = (("Set-Cookie", "mk=1; Path=/"), ("Set-Cookie", "tobira=forged; Path=/"))
    standin.state.faults[CHECK] = Fault(FaultKind.EXTRA_HEADERS, headers=cookie)
    answer = browser.callback(callback_url)
    assert answer.status_code == 303
    assert "mk" not in set_cookie_names(answer)
    assert browser.client.cookies["tobira"] != "forged"
    assert browser.session().json()["user"]["username"] == "alice"


# --- the proxy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "expected"), cases(TRANSPORT_FAULTS, 2))
def test_proxy_fault_is_a_misskey_shaped_error(
    signed_in: Browser, standin: RunningStandin, fault: Fault, expected: tuple[int, ErrorCode]
) -> None:
    assert signed_in.api("notes/timeline").status_code == 200  # and leaves a kept-alive connection
    standin.state.faults[TIMELINE] = fault
    hits = Hits(standin)
    with timed() as took:
        answer = signed_in.api("notes/timeline")
    assert_misskey_error(answer, *expected)
    assert took.seconds < TIME_BOUND
    assert set_cookie_names(answer) == set()
    assert "retry-after" not in answer.headers
    assert (hits[TIMELINE], hits["moved"]) == (1, 0)
    assert hung_up(standin)
    standin.state.faults.clear()
    assert signed_in.api("notes/timeline").status_code == 200  # the session survives


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        pytest.param(
            Fault(FaultKind.JSON, status=429, body=MISSKEY_RATE_LIMITED, headers=RETRY_AFTER), 429, id="429"
        ),
        pytest.param(Fault(FaultKind.JSON, status=503, body=UNAVAILABLE, headers=RETRY_AFTER), 503, id="503"),
    ],
)
def test_proxy_relays_retry_later_with_retry_after(
    signed_in: Browser, standin: RunningStandin, fault: Fault, status: int
) -> None:
    standin.state.faults[TIMELINE] = fault
    hits = Hits(standin)
    answer = signed_in.api("notes/timeline")
    assert (answer.status_code, answer.headers["retry-after"]) == (status, "7")
    assert answer.json() == fault.body
    assert hits[TIMELINE] == 1


def test_proxy_html_503_is_502_without_the_page(signed_in: Browser, standin: RunningStandin) -> None:
    standin.state.faults[TIMELINE] = Fault(FaultKind.HTML, status=503, headers=RETRY_AFTER)
    answer = signed_in.api("notes/timeline")
    assert_misskey_error(answer, *BAD)
    assert "nginx" not in answer.text


def test_proxy_relays_json_of_any_shape(signed_in: Browser, standin: RunningStandin) -> None:
    standin.state.faults[TIMELINE] = Fault(FaultKind.JSON, body={"unexpected": [1, 2]})
    answer = signed_in.api("notes/timeline")
    assert (answer.status_code, answer.json()) == (200, {"unexpected": [1, 2]})


def test_set_cookie_from_the_api_reaches_nobody(signed_in: Browser, standin: RunningStandin) -> None:
    cookie = (("Set-Cookie", "mk=1; Path=/"), ("Set-Cookie", "tobira=forged; Path=/"))
    standin.state.faults[TIMELINE] = Fault(FaultKind.EXTRA_HEADERS, headers=cookie)
    answer = signed_in.api("notes/timeline")
    assert answer.status_code == 200
    assert set_cookie_names(answer) == set()
    standin.state.faults.clear()
    assert signed_in.api("notes/timeline").status_code == 200
    assert "cookie" not in standin.state.calls_to("notes/timeline")[-1].headers


def test_dropped_note_is_posted_once(signed_in: Browser, standin: RunningStandin) -> None:
    assert signed_in.api("notes/timeline").status_code == 200  # leaves a kept-alive connection
    standin.state.faults["api/notes/create"] = Fault(FaultKind.DROP)
    answer = signed_in.api("notes/create", {"text": "only once"})
    assert_misskey_error(answer, *UNREACHABLE)
    assert [note.text for note in standin.state.notes].count("only once") == 1


def test_connection_that_sent_a_surplus_answer_is_not_reused(
    signed_in: Browser, standin: RunningStandin
) -> None:
    expected = signed_in.api("notes/timeline").json()
    standin.state.faults[TIMELINE] = Fault(FaultKind.LENGTH_UNDER)
    first = signed_in.api("notes/timeline")
    assert (first.status_code, first.json()) == (200, expected)
    assert "retry-after" not in first.headers  # the surplus answer's header
    second = signed_in.api("notes/timeline")  # on a fresh connection, with its own (spoiled) answer
    assert (second.status_code, second.json()) == (200, expected)
    assert hung_up(standin)


# --- what is left behind --------------------------------------------------------------------------------

LEAK_FAULTS = [
    Fault(FaultKind.RESET),
    Fault(FaultKind.CLOSE_AFTER_HEADERS),
    Fault(FaultKind.DROP),
    Fault(FaultKind.ENDLESS),
    Fault(FaultKind.ENDLESS_HEADER),
    Fault(FaultKind.GZIP_ENDLESS),
    Fault(FaultKind.BIG_BODY),
    Fault(FaultKind.GZIP_BOMB),
    Fault(FaultKind.HUGE_HEADERS),
    Fault(FaultKind.REDIRECT),
    Fault(FaultKind.HTML),
]


def test_faults_leave_no_connections_or_busy_tasks(
    signed_in: Browser, standin: RunningStandin, tobira: TobiraProcess
) -> None:
    pid = tobira.process.pid
    assert signed_in.api("notes/timeline").status_code == 200
    baseline = open_fds(pid)
    for index in range(20):
        standin.state.faults[TIMELINE] = LEAK_FAULTS[index % len(LEAK_FAULTS)]
        assert signed_in.api("notes/timeline").status_code == 502
    # Ten slow answers at once, all given up on together.
    standin.state.faults[TIMELINE] = Fault(FaultKind.DRIP_BODY)
    cookies = dict(signed_in.client.cookies)

    def slow_call(_: int) -> int:
        url, origin = f"{signed_in.tobira}/api/notes/timeline", {"Origin": signed_in.tobira}
        return httpx.post(url, json={}, cookies=cookies, headers=origin, timeout=20).status_code

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(slow_call, range(10)))
    assert statuses == [504] * 10
    assert hung_up(standin)
    standin.state.faults.clear()
    with timed() as took:
        assert signed_in.api("notes/timeline").status_code == 200
        assert httpx.get(f"{signed_in.tobira}/healthz").status_code == 200
    assert took.seconds < 0.5
    assert wait_for(lambda: open_fds(pid) <= baseline + 2, 2.0), (baseline, open_fds(pid))
    busy_before = cpu_seconds(pid)
    time.sleep(0.5)
    assert cpu_seconds(pid) - busy_before < 0.1  # nothing still spinning on a dead answer
