"""Several tobira processes behave as one: two real tobira processes behind a real nginx that alternates
between them (`deploy/nginx/`, see `tests.nginx_support`), on the SQLite store (one host, one file) and on
Redis; and `tobira serve --workers` run exactly as the container image runs it.

nginx adds `X-Upstream` (which tobira answered) for these tests, so each assertion says which process did
what: a sign-in started on one finishes on the other (MiAuth, legacy, OAuth 2.0, and an OpenID code made on
one and redeemed on the other), a sign-out on one is refused by both (the session, the proxy, forward
authentication), a stream open on one is closed when the session ends on the other, and rate limits, the
one-shot check and OpenID codes are counted once.
Each browser connects from its own loopback address, which nginx passes on as X-Forwarded-For, so rate
limits count each test's requests apart.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from app.standin import RunningStandin
from tests.conftest import REDIS_URL, ROOT, STANDIN_HOST, Browser, TobiraProcess, free_port, start_tobira
from tests.nginx_support import run_nginx
from tests.oidc_support import clients_file, code_flow, pkce
from tests.test_dockerfile import command as image_command
from tests.test_legacy import approve as legacy_approve
from tests.test_oauth2 import decide

SECRET_KEYS = "replicas-test-key-" + "x" * 32  # shared: a cookie sealed by one must open on the other
LOGIN_LIMIT = 6  # sign-ins started per client and minute
ENDED_CHECK_SECONDS = 30  # app.streaming: how often a stream looks for a sign-out elsewhere


@pytest.fixture(scope="module")
def old_server() -> Iterator[RunningStandin]:
    """A server without MiAuth: tobira signs in with the legacy app flow."""
    from app.standin import StandinConfig, run_standin_in_thread

    port = free_port(STANDIN_HOST)
    config = StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}", miauth=False, version="12.20.0")
    with run_standin_in_thread(config, host=STANDIN_HOST, port=port) as running:
        yield running


@pytest.fixture(scope="module")
def oauth_server() -> Iterator[RunningStandin]:
    from app.standin import StandinConfig, run_standin_in_thread

    port = free_port(STANDIN_HOST)
    config = StandinConfig(base_url=f"http://{STANDIN_HOST}:{port}", oauth2=True)
    with run_standin_in_thread(config, host=STANDIN_HOST, port=port) as running:
        yield running


@dataclass
class Replicas:
    url: str  # nginx
    processes: list[TobiraProcess]


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def replicas(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    standin: RunningStandin,
    old_server: RunningStandin,
    oauth_server: RunningStandin,
) -> Iterator[Replicas]:
    directory = tmp_path_factory.mktemp(f"replicas-{request.param}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = REDIS_URL if request.param == "redis" else f"sqlite:///{directory / 'store.sqlite3'}"
    env = {
        "TOBIRA_PUBLIC_URL": url,
        "TOBIRA_SECRET_KEYS": SECRET_KEYS,
        "TOBIRA_STORE_URL": store,
        "TOBIRA_DEV_INSTANCES": ",".join(server.url for server in (standin, old_server, oauth_server)),
        "TOBIRA_AUTH_METHODS": "oauth2,miauth,legacy",
        "TOBIRA_PERMISSIONS": "read:account,write:notes",
        "TOBIRA_LOGIN_RATE_LIMIT": str(LOGIN_LIMIT),
        "TOBIRA_OIDC_CLIENTS": str(clients_file(directory, "http://127.0.0.1:9")),
    }
    processes = []
    for number in (1, 2):
        (directory / f"tobira-{number}").mkdir()
        processes.append(start_tobira(directory / f"tobira-{number}", **env))
    try:
        servers = [process.url.removeprefix("http://") for process in processes]
        with run_nginx(directory / "nginx", port, servers):
            yield Replicas(url, processes)
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
def new_browser(replicas: Replicas) -> Iterator[Callable[[RunningStandin], Browser]]:
    """Browsers on the replicas, each from an address of its own (127.x.y.z)."""
    clients: list[httpx.Client] = []

    def make(server: RunningStandin) -> Browser:
        address = (
            f"127.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
        )
        clients.append(httpx.Client(timeout=20, transport=httpx.HTTPTransport(local_address=address)))
        return Browser(replicas.url, server, clients[-1])

    yield make
    for client in clients:
        client.close()


def upstream(answer: httpx.Response) -> str:
    """Which tobira process answered (nginx's X-Upstream)."""
    served: str = answer.headers["x-upstream"]
    assert served.startswith("127.0.0.1:"), served
    return served


def steer_away_from(browser: Browser, served: str) -> None:
    """Make the browser's next request land on the other process than `served`: round robin alternates,
    so once a request lands on `served`, the next lands elsewhere (other requests, such as an instance
    fetching tobira's OAuth client document, may have come in between)."""
    for _ in range(4):
        if upstream(browser.client.get(browser.tobira + "/healthz")) == served:
            return
    raise AssertionError("nginx does not alternate")


def test_nginx_alternates_between_the_two_processes(replicas: Replicas) -> None:
    with httpx.Client(timeout=10) as client:
        served = [upstream(client.get(replicas.url + "/healthz")) for _ in range(6)]
    assert set(served) == {process.url.removeprefix("http://") for process in replicas.processes}
    assert all(served[i] != served[i + 1] for i in range(5))


def test_a_miauth_sign_in_started_on_one_finishes_on_the_other(
    new_browser: Callable[[RunningStandin], Browser], standin: RunningStandin
) -> None:
    browser = new_browser(standin)
    started = browser.start(return_to="/after")
    assert started.status_code == 303, started.text
    callback_url = browser.approve(started.headers["location"], "alice")
    steer_away_from(browser, upstream(started))
    finished = browser.callback(callback_url)
    assert (finished.status_code, finished.headers["location"]) == (303, "/after")
    assert upstream(finished) != upstream(started)
    answers = [browser.session() for _ in range(2)] + [browser.api("i") for _ in range(2)]
    assert [answer.status_code for answer in answers] == [200] * 4
    assert len({upstream(answer) for answer in answers}) == 2
    assert answers[0].json()["user"]["username"] == answers[1].json()["user"]["username"] == "alice"


def test_a_legacy_sign_in_started_on_one_finishes_on_the_other(
    new_browser: Callable[[RunningStandin], Browser], old_server: RunningStandin
) -> None:
    browser = new_browser(old_server)
    started = browser.start()
    assert started.status_code == 303, started.text
    callback_url = legacy_approve(browser, started.headers["location"], "bob")
    steer_away_from(browser, upstream(started))
    finished = browser.callback(callback_url)
    assert finished.status_code == 303, finished.text
    assert upstream(finished) != upstream(started)
    sessions = [browser.session() for _ in range(2)]
    assert [answer.json()["method"] for answer in sessions] == ["legacy", "legacy"]
    assert len({upstream(answer) for answer in sessions}) == 2
    assert [browser.api("i").status_code for _ in range(2)] == [200, 200]


def test_an_oauth2_sign_in_started_on_one_finishes_on_the_other(
    new_browser: Callable[[RunningStandin], Browser], oauth_server: RunningStandin
) -> None:
    browser = new_browser(oauth_server)
    started = browser.start()
    assert started.status_code == 303, started.text
    assert started.headers["location"].startswith(oauth_server.url + "/oauth/authorize?")
    callback_url = decide(browser, started.headers["location"], user="alice")
    steer_away_from(browser, upstream(started))
    finished = browser.callback(callback_url)
    assert finished.status_code == 303, finished.text
    assert upstream(finished) != upstream(started)
    sessions = [browser.session() for _ in range(2)]
    assert [answer.json()["method"] for answer in sessions] == ["oauth2", "oauth2"]
    assert len({upstream(answer) for answer in sessions}) == 2
    assert [browser.api("i").status_code for _ in range(2)] == [200, 200]


def test_a_sign_out_on_one_is_refused_by_both(
    new_browser: Callable[[RunningStandin], Browser], standin: RunningStandin
) -> None:
    browser = new_browser(standin)
    browser.sign_in()
    cookie = browser.client.cookies["tobira"]
    signed_out = browser.post_form("/logout", {})
    assert signed_out.status_code == 303
    replay = new_browser(standin)
    replay.client.cookies.set("tobira", cookie)
    answers = [replay.session(), replay.session(), replay.api("i"), replay.api("i")]
    assert [answer.status_code for answer in answers] == [401] * 4
    assert len({upstream(answer) for answer in answers}) == 2


def test_a_callback_raced_on_both_is_checked_once(
    new_browser: Callable[[RunningStandin], Browser], standin: RunningStandin
) -> None:
    first = new_browser(standin)
    started = first.start()
    callback_url = first.approve(started.headers["location"])
    second = new_browser(standin)
    second.client.cookies = httpx.Cookies(first.client.cookies)  # the same pending sign-in, twice
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda browser: browser.callback(callback_url), [first, second]))
    assert sorted(answer.status_code for answer in answers)[0] == 303
    assert [answer.status_code == 303 for answer in answers].count(True) == 1, [a.text for a in answers]
    assert len({upstream(answer) for answer in answers}) == 2
    session = callback_url.split("session=", 1)[1]
    assert standin.state.check_count(session) == 1


def test_the_sign_in_rate_limit_is_counted_once_for_both(
    new_browser: Callable[[RunningStandin], Browser], standin: RunningStandin
) -> None:
    if time.time() % 60 > 50:  # the fixed window must not turn over in the middle
        time.sleep(60 - time.time() % 60 + 0.5)
    browser = new_browser(standin)
    answers = [browser.start() for _ in range(LOGIN_LIMIT + 1)]
    assert [answer.status_code for answer in answers] == [303] * LOGIN_LIMIT + [429]
    assert int(answers[-1].headers["retry-after"]) > 0
    assert len({upstream(answer) for answer in answers[:LOGIN_LIMIT]}) == 2  # each saw only half of them


@pytest.mark.anyio
async def test_a_stream_on_one_closes_within_30_s_of_a_sign_out_on_the_other(
    replicas: Replicas, new_browser: Callable[[RunningStandin], Browser], standin: RunningStandin
) -> None:
    browser = new_browser(standin)
    await anyio.to_thread.run_sync(browser.sign_in)
    cookie = browser.client.cookies["tobira"]
    async with connect(
        "ws" + replicas.url.removeprefix("http") + "/streaming",
        origin=Origin(replicas.url),
        additional_headers={"Cookie": f"tobira={cookie}"},
        open_timeout=20,
    ) as stream:
        assert stream.response is not None
        streaming_on = stream.response.headers["X-Upstream"]
        await stream.send(
            json.dumps({"type": "connect", "body": {"channel": "main", "id": "1", "pong": True}})
        )
        with anyio.fail_after(20):
            assert json.loads(await stream.recv())["type"] == "connected"
        # Round robin: once a request lands where the stream is, the next lands on the other process.
        while upstream(
            await anyio.to_thread.run_sync(lambda: browser.client.get(replicas.url + "/healthz"))
        ) != (streaming_on):
            pass
        signed_out = await anyio.to_thread.run_sync(lambda: browser.post_form("/logout", {}))
        assert signed_out.status_code == 303
        assert upstream(signed_out) != streaming_on
        started = time.monotonic()
        with anyio.fail_after(ENDED_CHECK_SECONDS + 10), pytest.raises(ConnectionClosed):
            while True:
                await stream.recv()
        assert stream.close_code == 4001
        assert time.monotonic() - started <= ENDED_CHECK_SECONDS + 2


APP = {"X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/page"}


def test_forward_authentication_answers_alike_on_both_and_honours_a_sign_out(
    new_browser: Callable[[RunningStandin], Browser], standin: RunningStandin
) -> None:
    browser = new_browser(standin)
    browser.sign_in("alice")
    passes = [browser.client.get(browser.tobira + "/auth/request", headers=APP) for _ in range(2)]
    assert [answer.status_code for answer in passes] == [200, 200]
    assert {answer.headers["remote-user"] for answer in passes} == {f"alice@{STANDIN_HOST}:{standin.port}"}
    assert len({upstream(answer) for answer in passes}) == 2
    cookie = browser.client.cookies["tobira"]
    assert browser.post_form("/logout", {}).status_code == 303
    replay = new_browser(standin)
    replay.client.cookies.set("tobira", cookie)
    refused = [replay.client.get(replay.tobira + "/auth/request", headers=APP) for _ in range(2)]
    assert [answer.status_code for answer in refused] == [401, 401]
    assert len({upstream(answer) for answer in refused}) == 2


SPA_CB = "http://127.0.0.1:9/spa/cb"  # the public client of tests.oidc_support.clients_file


def test_an_openid_code_made_on_one_is_redeemed_once_for_both(
    new_browser: Callable[[RunningStandin], Browser], standin: RunningStandin
) -> None:
    browser = new_browser(standin)
    verifier, challenge = pkce()
    code = code_flow(browser, "spa", SPA_CB, code_challenge=challenge, code_challenge_method="S256")["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": "spa",
        "redirect_uri": SPA_CB,
        "code_verifier": verifier,
    }
    with ThreadPoolExecutor(2) as pool:  # the same code at both processes at once
        answers = list(
            pool.map(lambda _: browser.client.post(browser.tobira + "/oidc/token", data=form), [1, 2])
        )
    assert sorted(answer.status_code for answer in answers) == [200, 400], [a.text for a in answers]
    assert len({upstream(answer) for answer in answers}) == 2
    assert "id_token" in next(answer for answer in answers if answer.status_code == 200).json()
    assert next(answer for answer in answers if answer.status_code == 400).json()["error"] == "invalid_grant"
    # Both sign with the same keys, kept in the store.
    keys = [browser.client.get(browser.tobira + "/oidc/jwks") for _ in range(2)]
    assert len({upstream(answer) for answer in keys}) == 2
    assert keys[0].json() == keys[1].json()


# `tobira serve --workers`, as the image runs it.


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def test_the_image_command_runs_workers_that_share_one_store(tmp_path: Path, standin: RunningStandin) -> None:
    port = free_port()
    shell, flag, line = image_command()
    line = line.replace("--host 0.0.0.0", "--host 127.0.0.1").replace("--port 8000", f"--port {port}")
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "TOBIRA_WORKERS": "3",
        "TOBIRA_PUBLIC_URL": url,
        "TOBIRA_DATA_DIR": str(tmp_path / "data"),
        "TOBIRA_DEV_INSTANCES": standin.url,
        "TOBIRA_LOGIN_RATE_LIMIT": "0",
    }
    # The image's `python` is the virtualenv's; here it is this interpreter.
    line = line.replace("exec python ", f"exec {sys.executable} ")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [shell, flag, line], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("Application startup complete.") < 3 or not answers(url):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        workers = {int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", log.read_text())}
        assert len(workers) == 3
        assert workers <= set(children(process.pid))  # three processes of the one tobira serve
        # No keep-alive: every request is a new connection, which any of the three workers may accept.
        with httpx.Client(timeout=20, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            browser = Browser(url, standin, client)
            started = browser.start()
            callback_url = browser.approve(started.headers["location"])
            pending = httpx.Cookies(client.cookies)
            assert browser.callback(callback_url).status_code == 303
            assert [browser.session().status_code for _ in range(6)] == [200] * 6
            cookie = client.cookies["tobira"]
            assert browser.post_form("/logout", {}).status_code == 303
            client.cookies.set("tobira", cookie)
            assert [browser.session().status_code for _ in range(6)] == [401] * 6
            client.cookies = pending
            assert browser.callback(callback_url).status_code != 303
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=20) == 0
        finally:
            process.kill()
    output = log.read_text()
    assert output.startswith(f"tobira: listening on {url}, 3 worker processes (Ctrl+C to stop)\n"), output


def answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
