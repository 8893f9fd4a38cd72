"""The network lab's scenarios: what a person, a stranger or another site does, and what came of it.

Each scenario runs inside the lab (`tests.lab`) against a tobira process that resolves names for real, and
returns plain facts as JSON — statuses, error codes, times, counts; `tests/test_lab.py` holds the
expectations. A step a scenario needs in order to mean anything (the victim's own sign-in before an attack
on it) raises LabError instead. Clients connect from distinct loopback addresses where tobira counts per
client address.
"""

from __future__ import annotations

import html
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from app.hosts import parse_instance
from app.standin import RunningStandin
from tests.conftest import TobiraProcess
from tests.hostile_support import Canary, mint_session
from tests.lab import ATTACKER_DOMAIN, KEY, Lab, LabError, host
from tests.lab_fakes import RawTLSServer

CLIENT_TIMEOUT = 30.0
HOSTILE_CLIENTS = ("127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4")
PER_CLIENT = 4  # TOBIRA_RESOLVE_PER_CLIENT's default
HONEST_CLIENTS = ("127.0.2.1", "127.0.2.2", "127.0.2.3")
REBIND_WAIT = 11.0  # past the guard's 10 s of checked answers and its 4 s idle connections
HOSTILE_BODIES = 6  # look-ups of hostile servers at once
FRESH_NAMES = 30
DESCRIPTOR_WAIT = 12.0
ERROR_PAGE_CODE = re.compile(r"Error code: <code>([A-Z_]+)</code>")
INSTANCE_INPUT = re.compile(r'<input[^>]*\bname="instance"[^>]*>', re.S)
VALUE = re.compile(r'\bvalue="([^"]*)"')


def browser(tobira: TobiraProcess, source: str | None = None) -> httpx.Client:
    """A cookie-keeping client of `tobira`, connecting from `source`; no connection is kept between requests,
    so tobira's descriptors are its own."""
    transport = httpx.HTTPTransport(local_address=source, limits=httpx.Limits(max_keepalive_connections=0))
    return httpx.Client(base_url=tobira.url, timeout=CLIENT_TIMEOUT, transport=transport)


def same_origin(tobira: TobiraProcess) -> dict[str, str]:
    return {"Origin": tobira.url, "Sec-Fetch-Site": "same-origin"}


def outcome(answer: httpx.Response) -> dict[str, Any]:
    """The status and, for an error, tobira's error code (from JSON or from the HTML page)."""
    code = None
    if answer.status_code >= 400:
        if answer.headers.get("content-type", "").startswith("application/json"):
            code = answer.json().get("error", {}).get("code")
        else:
            found = ERROR_PAGE_CODE.search(answer.text)
            code = found[1] if found else None
    return {"status": answer.status_code, "code": code}


def lookup(client: httpx.Client, tobira: TobiraProcess, name: str) -> dict[str, Any]:
    started = time.monotonic()
    answer = client.get("/lookup", params={"instance": name}, headers=same_origin(tobira))
    result = outcome(answer) | {"elapsed": round(time.monotonic() - started, 3)}
    if answer.status_code == 200:
        result["name"] = answer.json()["name"]
    return result


def sign_in(
    lab: Lab, client: httpx.Client, tobira: TobiraProcess, instance: str, user: str
) -> httpx.Response:
    """The whole sign-in from tobira's own form: 303 to the consent page, approval, then the callback."""
    started = client.post("/login", data={"instance": instance}, headers=same_origin(tobira))
    if started.status_code != 303:
        raise LabError(f"signing in with {instance} answered {started.status_code}: {started.text[:300]}")
    return client.get(lab.approve(started.headers["location"], user))


def requests_seen(lab: Lab) -> int:
    """Every request all the fakes received so far (a TLS handshake alone is no request)."""
    fakes = lab.fakes
    standins: list[RunningStandin] = [fakes.good, fakes.good_v6, fakes.attacker, fakes.wrong_cert]
    raws: list[RawTLSServer] = [fakes.endless_header, fakes.gzip_tail, fakes.stream]
    return sum(sum(s.state.route_hits.values()) for s in standins) + sum(len(r.requests) for r in raws)


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------------------------------------------------
# The lab itself


def namespace(lab: Lab) -> dict[str, Any]:
    """What the lab is: no way out, the lab's resolver, canaries that count, names that resolve."""
    default_routes = (
        subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True, check=True).stdout
        + subprocess.run(
            ["ip", "-6", "route", "show", "default"], capture_output=True, text=True, check=True
        ).stdout
    )
    outside: dict[str, int | str | None] = {}
    # Public addresses of the internet, and a private one that exists outside (this machine's resolver here).
    for address in ("1.1.1.1", "2606:4700:4700::1111", "10.255.255.53"):
        try:
            socket.create_connection((address, 443), timeout=2).close()
            outside[address] = "connected"
        except OSError as exc:
            outside[address] = exc.errno
    own = Canary([("10.0.0.1", 0)])
    try:
        socket.create_connection(own.listeners[0], timeout=2).close()
        canary_self_test = len(own.hits())
    finally:
        own.close()
    resolved = sorted({info[4][0] for info in socket.getaddrinfo(host("good"), 443, type=socket.SOCK_STREAM)})
    return {
        "default_routes": default_routes,
        "outside": outside,
        "resolv_conf": Path("/etc/resolv.conf").read_text(),
        "canary_self_test": canary_self_test,
        "good_resolves_to": resolved,
    }


def sign_in_end_to_end(lab: Lab) -> dict[str, Any]:
    """name → https stand-in → MiAuth approval → callback → a proxy call, all through the lab's DNS."""
    tobira = lab.tobira()
    with browser(tobira) as person:
        looked = lookup(person, tobira, host("good"))
        finished = sign_in(lab, person, tobira, host("good"), "alice")
        session = person.get("/session")
        api = person.post("/api/i", json={}, headers=same_origin(tobira))
    state = lab.fakes.good.state
    calls = state.calls_to("i")
    return {
        "lookup": looked,
        "callback": outcome(finished) | {"location": finished.headers.get("location")},
        "session": session.json(),
        "api": outcome(api) | {"username": api.json().get("username")},
        "proxied_with_alices_token": bool(calls) and calls[-1].token == state.token_of("alice"),
        "dns_asked": lab.dns.asked(host("good")),
    }


def lookup_scenario(lab: Lab, name: str, fresh: bool = False) -> dict[str, Any]:
    """One `/lookup` of `name`; `fresh`: with a tobira of its own (for names that hold resources)."""
    before = requests_seen(lab)
    if fresh:
        with lab.fresh_tobira() as tobira, browser(tobira) as client:
            result = lookup(client, tobira, name)
    else:
        tobira = lab.tobira()
        with browser(tobira) as client:
            result = lookup(client, tobira, name)
    return result | {"fake_requests": requests_seen(lab) - before, "dns_asked": lab.dns.asked(name)}


# ---------------------------------------------------------------------------------------------------------
# Attacks through names


def rebinding(lab: Lab) -> dict[str, Any]:
    """Public while tobira looks the name up, 127.0.0.1 (TTL 0) by the time the callback's /check connects."""
    tobira = lab.tobira()
    name = host("rebind")
    with browser(tobira) as person:
        looked_at = time.monotonic()
        looked = lookup(person, tobira, name)
        started = person.post("/login", data={"instance": name}, headers=same_origin(tobira))
        if started.status_code != 303:
            raise LabError(f"the sign-in with {name} answered {started.status_code}")
        session = started.headers["location"].rsplit("/", 1)[-1].split("?", 1)[0]
        callback = lab.approve(started.headers["location"], "alice")
        time.sleep(max(0.0, looked_at + REBIND_WAIT - time.monotonic()))
        finished = person.get(callback)
        signed_in = person.get("/session")
    return {
        "lookup": looked,
        "callback": outcome(finished),
        "session_status": signed_in.status_code,
        "later_answers_served": lab.dns.later_served[name],
        "checks_received": lab.fakes.good.state.check_counts[session],
    }


# ---------------------------------------------------------------------------------------------------------
# Item 1: names that never answer must not slow anyone else down


def starvation(lab: Lab) -> dict[str, Any]:
    """Sixteen look-ups of never-answering names from four addresses, a fifth from one of them, and
    meanwhile an honest look-up, sign-in and proxy call; every end time is counted from the first request."""
    with lab.fresh_tobira() as tobira, ThreadPoolExecutor(max_workers=24) as pool:
        with browser(tobira, HONEST_CLIENTS[0]) as person:
            if sign_in(lab, person, tobira, host("good"), "alice").status_code != 303:
                raise LabError("the honest person could not sign in before the attack")
            zero = time.monotonic()

            def timed(action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
                return action() | {"ended": round(time.monotonic() - zero, 3)}

            def hostile(source: str, name: str) -> Future[dict[str, Any]]:
                def look() -> dict[str, Any]:
                    with browser(tobira, source) as client:
                        return lookup(client, tobira, name)

                return pool.submit(timed, look)

            names = {
                source: [f"{n}-{i}.{host('silent')}" for i in range(PER_CLIENT)]
                for n, source in enumerate(HOSTILE_CLIENTS)
            }
            attacks = [hostile(source, name) for source, batch in names.items() for name in batch]
            under_way = wait_until(lambda: len(lab.dns.names_asked(host("silent"))) >= len(attacks), 5)
            over_the_cap = hostile(HOSTILE_CLIENTS[0], f"extra.{host('silent')}")

            def honest_lookup() -> dict[str, Any]:
                with browser(tobira, HONEST_CLIENTS[1]) as client:
                    return lookup(client, tobira, f"honest-lookup.{host('fresh')}")

            def honest_sign_in() -> dict[str, Any]:
                with browser(tobira, HONEST_CLIENTS[2]) as client:
                    name = f"honest-sign-in.{host('fresh')}"
                    started = client.post("/login", data={"instance": name}, headers=same_origin(tobira))
                    if started.status_code != 303:
                        return outcome(started)
                    return outcome(client.get(lab.approve(started.headers["location"], "bob")))

            def honest_proxy_call() -> dict[str, Any]:
                return outcome(person.post("/api/i", json={}, headers=same_origin(tobira)))

            honest = {
                "lookup": pool.submit(timed, honest_lookup),
                "sign_in": pool.submit(timed, honest_sign_in),
                "proxy_call": pool.submit(timed, honest_proxy_call),
            }
            return {
                "hostile_under_way_first": under_way,
                "honest": {what: future.result() for what, future in honest.items()},
                "hostile": [future.result() for future in attacks],
                "over_the_cap": over_the_cap.result(),
            }


# ---------------------------------------------------------------------------------------------------------
# Item 2: a sign-in another site starts


def _form_value(answer: httpx.Response) -> str | None:
    """The value of the sign-in form's `instance` field, if the answer is that form."""
    field = INSTANCE_INPUT.search(answer.text)
    value = VALUE.search(field[0]) if field else None
    return html.unescape(value[1]) if value else None


def cross_site_sign_in(lab: Lab) -> dict[str, Any]:
    """A signed-in person's browser sent to tobira's /login by another site, naming the attacker's server
    (which approves at once for its own account, mallory). Each case names a server of its own, so none
    profits from what tobira remembers of another."""
    tobira = lab.tobira()
    attacks = {
        "post-origin-other-site": ("POST", {"Origin": f"https://{ATTACKER_DOMAIN}"}),
        "post-sec-fetch-cross-site": ("POST", {"Sec-Fetch-Site": "cross-site"}),
        "post-neither-header": ("POST", {}),
        "get-sec-fetch-cross-site": ("GET", {"Sec-Fetch-Site": "cross-site"}),
    }
    controls = {
        "post-same-origin": ("POST", same_origin(tobira)),
        "get-sec-fetch-none": ("GET", {"Sec-Fetch-Site": "none"}),  # a typed or bookmarked ?instance= link
    }
    counter = iter(range(100))

    def send(client: httpx.Client, method: str, headers: dict[str, str]) -> tuple[str, httpx.Response, int]:
        name = f"m{next(counter)}.{ATTACKER_DOMAIN}"
        before = sum(lab.fakes.attacker.state.route_hits.values())
        if method == "POST":
            answer = client.post("/login", data={"instance": name}, headers=headers)
        else:
            answer = client.get("/login", params={"instance": name}, headers=headers)
        return name, answer, sum(lab.fakes.attacker.state.route_hits.values()) - before

    def facts(name: str, answer: httpx.Response, requests: int) -> dict[str, Any]:
        location = answer.headers.get("location")
        return {
            "status": answer.status_code,
            "html": answer.headers.get("content-type", "").startswith("text/html"),
            "form_value_is_the_name": _form_value(answer) == name,
            "redirect_to_the_attacker": bool(location) and location.startswith(f"https://{name}/miauth/"),
            "location": location,
            "attacker_requests": requests,
        }

    results: dict[str, Any] = {}
    with browser(tobira) as victim:
        if sign_in(lab, victim, tobira, host("good"), "alice").status_code != 303:
            raise LabError("the victim could not sign in")
        before = victim.get("/session").json()
        for case, (method, headers) in attacks.items():
            name, answer, requests = send(victim, method, headers)
            results[case] = facts(name, answer, requests)
            if results[case]["redirect_to_the_attacker"]:
                # The attacker's server approves at once and sends the browser back to tobira's callback.
                results[case]["attack_callback"] = outcome(
                    victim.get(lab.approve(answer.headers["location"], "mallory"))
                )
        after = victim.get("/session").json()
    with browser(tobira) as someone:
        for case, (method, headers) in controls.items():
            results[case] = facts(*send(someone, method, headers))
    return {"cases": results, "session_before": before, "session_after": after}


# ---------------------------------------------------------------------------------------------------------
# Item 3: answers that never end


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LabError("no VmRSS")


def hostile_body(lab: Lab, kind: str) -> dict[str, Any]:
    """Look-ups of HOSTILE_BODIES names served by an endless answer (`kind`: endless-header or gzip-tail) at
    once, from as many addresses; tobira's resident memory is sampled every 20 ms meanwhile."""
    server = {"endless-header": lab.fakes.endless_header, "gzip-tail": lab.fakes.gzip_tail}[kind]
    with lab.fresh_tobira() as tobira, ThreadPoolExecutor(max_workers=HOSTILE_BODIES) as pool:
        pid = tobira.process.pid
        with browser(tobira) as client:
            if lookup(client, tobira, host("good"))["status"] != 200:
                raise LabError("the warm-up look-up failed")
        baseline = peak = rss_bytes(pid)

        def look(index: int) -> dict[str, Any]:
            with browser(tobira, f"127.0.3.{index + 1}") as client:
                return lookup(client, tobira, f"n{index}.{host(kind)}")

        futures = [pool.submit(look, index) for index in range(HOSTILE_BODIES)]
        while not all(future.done() for future in futures):
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.02)
        return {
            "lookups": [future.result() for future in futures],
            "baseline_mb": round(baseline / 2**20, 1),
            "growth_mb": round((peak - baseline) / 2**20, 1),
            "connections": len(server.requests),
            "bytes_sent_mb": round(sum(server.sent) / 2**20, 1),
        }


# ---------------------------------------------------------------------------------------------------------
# Item 4: descriptors after many new names


def descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def upstream_sockets(pid: int) -> int:
    """How many of `pid`'s sockets are TCP connections to a port 443 (the fakes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[2].endswith(":01BB") and fields[9] in inodes:
                count += 1
    return count


def idle_descriptors(lab: Lab) -> dict[str, Any]:
    """FRESH_NAMES look-ups of new names, then how long tobira's descriptors take to return to where they
    were. The fakes never close an idle connection themselves: only tobira can."""
    with lab.fresh_tobira() as tobira, browser(tobira) as client:
        pid = tobira.process.pid
        warm_up = lookup(client, tobira, f"warm-up.{host('fresh')}")
        drained = wait_until(lambda: upstream_sockets(pid) == 0, DESCRIPTOR_WAIT)
        baseline = descriptors(pid)
        statuses = [lookup(client, tobira, f"n{i}.{host('fresh')}")["status"] for i in range(FRESH_NAMES)]
        after_lookups, upstream_after = descriptors(pid), upstream_sockets(pid)
        finished = time.monotonic()
        returned = wait_until(lambda: descriptors(pid) <= baseline, DESCRIPTOR_WAIT)
        return {
            "warm_up": warm_up["status"],
            "warm_up_connections_closed": drained,
            "baseline": baseline,
            "statuses": sorted(set(statuses)),
            "after_lookups": after_lookups,
            "upstream_after_lookups": upstream_after,
            "returned_to_baseline": returned,
            "seconds_to_return": round(time.monotonic() - finished, 1),
            "final": descriptors(pid),
            "upstream_final": upstream_sockets(pid),
        }


# ---------------------------------------------------------------------------------------------------------
# Item 5: a token in a redirect of the streaming upgrade


def streaming_redirect(lab: Lab) -> dict[str, Any]:
    """A signed-in browser opens /streaming; the upstream answers the upgrade with a 302 to an https URL that
    repeats `?i=TOKEN`. The token must reach no line of tobira's output."""
    tobira = lab.tobira()
    token = "LabStreamToken" + secrets.token_hex(12)
    cookie = mint_session([KEY], parse_instance(host("stream"), ()), token)
    ws_url = tobira.url.replace("http://", "ws://") + "/streaming"
    status: int | None = None
    try:
        headers = {"Cookie": f"tobira={cookie}", "Origin": tobira.url}
        with connect(ws_url, additional_headers=headers, open_timeout=CLIENT_TIMEOUT):
            status = 101
    except InvalidStatus as refused:
        status = refused.response.status_code
    time.sleep(0.5)  # whatever tobira logs about it is written by now
    server = lab.fakes.stream
    leaked = [line.replace(token, "<TOKEN>") for line in tobira.log().splitlines() if token in line]
    return {
        "status": status,
        "upstream_requests_with_the_token": sum(token in line for line in server.requests),
        "log_lines_with_the_token": leaked,
    }


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "namespace": namespace,
    "sign-in": sign_in_end_to_end,
    "lookup": lookup_scenario,
    "rebinding": rebinding,
    "starvation": starvation,
    "cross-site-sign-in": cross_site_sign_in,
    "hostile-body": hostile_body,
    "idle-descriptors": idle_descriptors,
    "streaming-redirect": streaming_redirect,
}
