"""The network lab: tobira resolving names for real, inside a network namespace of its own.

`tests/test_lab.py` starts this module as

    unshare --net --mount --pid --fork --kill-child --mount-proc python -m tests.lab WORKDIR

so all of it lives in fresh namespaces: the network one has only `lo` and no route out (nothing sent here can
leave it), the mount one lets /etc/resolv.conf be replaced for the lab alone, and the PID one ends every
process started here when this one ends. The pytest process itself never enters them.

`Lab` sets up:
- `lo` up, carrying the fakes' public-looking addresses (`PUBLIC`, none from a documentation range, which the
  guard rightly refuses) and the forbidden ones (`FORBIDDEN`);
- `LabDNS` on DNS_ADDRESS:53 answering `zone()`, and /etc/resolv.conf bind-mounted to name only it, so glibc's
  getaddrinfo and dnspython alike resolve through it (every record with TTL 0);
- a trustme CA, trusted by the tobira processes alone (`SSL_CERT_FILE` in their environment);
- fakes on port 443: stand-in Misskey servers (`app.standin` over https, keeping idle connections for an
  hour like a server that never closes them), one with a certificate for another name, and the raw hostile
  servers of `tests.lab_fakes`;
- canaries (`tests.hostile_support.Canary`) on every forbidden address, ports 443 and 80;
- tobira processes started as an operator would (`tests.conftest.start_tobira`), logging at debug level.

Then it reads one JSON request a line on stdin, `{"scenario": NAME, "args": {...}}`, runs that scenario of
`tests.lab_scenarios`, and writes one JSON line on stdout: `{"result": {...}, "canary": [[listener, peer],
...]}` (the canary's hits during the scenario) or `{"error": traceback}`. Its first line is `{"ready": true}`.
At the end of stdin it stops everything and exits.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx
import trustme

from app.standin import RunningStandin, StandinConfig, StandinUser, run_standin_in_thread
from tests.conftest import TobiraProcess, start_tobira
from tests.hostile_support import Canary
from tests.lab_dns import LabDNS, Rule
from tests.lab_fakes import Behaviour, RawTLSServer, endless_header, gzip_then_endless, redirect_echo

DOMAIN = "tobira-lab.net"
ATTACKER_DOMAIN = "attacker-social.net"
DNS_ADDRESS = "127.0.0.53"

GOOD_V4 = "95.217.10.20"
GOOD_V6 = "2a01:4f9:c010:10::20"
WRONG_CERT_V4 = "95.217.10.21"
ENDLESS_HEADER_V4 = "95.217.10.22"
GZIP_TAIL_V4 = "95.217.10.23"
STREAM_V4 = "95.217.10.24"
ATTACKER_V4 = "88.198.20.30"
PUBLIC = (GOOD_V4, GOOD_V6, WRONG_CERT_V4, ENDLESS_HEADER_V4, GZIP_TAIL_V4, STREAM_V4, ATTACKER_V4)

# Where a confused tobira could end up. The IPv6 forms that carry an IPv4 address are given to `lo` as
# themselves, so a connection to one would reach its canary even though nothing here translates them.
FORBIDDEN = {
    "loopback": "127.0.0.1",
    "private-10": "10.0.0.1",
    "private-172": "172.16.0.1",
    "private-192": "192.168.1.1",
    "shared-100": "100.64.0.1",
    "metadata": "169.254.169.254",
    "v6-loopback": "::1",
    "v6-ula": "fd00::1",
    "v6-compatible": "::7f00:1",
    "nat64": "64:ff9b::a00:1",
    "6to4-loopback": "2002:7f00:1::1",
    "6to4-private": "2002:c0a8:101::1",
    "teredo-loopback": "2001:0:4136:e378:8000:63bf:80ff:fffe",  # client 127.0.0.1, server 65.54.227.120
}
CANARY_PORTS = (443, 80)

KEY = "lab-secret-key-0123456789abcdef0123456789abcdef"
PERMISSIONS = "read:account,write:notes"
RESOLVE_TIMEOUT = 3.0
LAB_NAME = "Lab Misskey"  # what the good fakes call themselves in api/meta
IDLE_FOREVER = 3600


def host(label: str) -> str:
    return f"{label}.{DOMAIN}"


def zone() -> dict[str, Rule]:
    """Every name the lab answers. Names not here are NXDOMAIN."""
    good = Rule(a=((GOOD_V4,),))
    return {
        host("good"): good,
        "*." + host("fresh"): good,
        host("v6"): Rule(aaaa=((GOOD_V6,),)),
        host("slow"): Rule(a=((GOOD_V4,),), delay=1.0),
        host("very-slow"): Rule(a=((GOOD_V4,),), delay=RESOLVE_TIMEOUT + 5),
        "*." + host("silent"): Rule(silent=True),
        host("silent"): Rule(silent=True),
        # Public while tobira first looks it up, 127.0.0.1 from then on.
        host("rebind"): Rule(a=((GOOD_V4,), ("127.0.0.1",)), public_for=2.0),
        host("mixed-loopback"): Rule(a=((GOOD_V4, "127.0.0.1"),)),
        host("mixed-private-first"): Rule(a=(("10.0.0.1", GOOD_V4),)),
        host("mixed-metadata"): Rule(a=((GOOD_V4, "169.254.169.254"),)),
        host("mixed-v6-loopback"): Rule(a=((GOOD_V4,),), aaaa=(("::1",),)),
        host("mixed-v6-ula"): Rule(aaaa=((GOOD_V6, "fd00::1"),)),
        host("cname-localhost"): Rule(cname="localhost."),
        host("cname-localhost-bare"): Rule(cname="localhost.", follow=False),
        host("cname-private"): Rule(cname="db.internal.corp."),
        host("cname-metadata"): Rule(cname="metadata.google.internal."),
        host("cname-chain"): Rule(cname=host("cname-private") + "."),
        "localhost": Rule(a=(("127.0.0.1",),), aaaa=(("::1",),)),
        "db.internal.corp": Rule(a=(("10.0.0.1",),)),
        "metadata.google.internal": Rule(a=(("169.254.169.254",),)),
        host("v4-mapped"): Rule(aaaa=(("::ffff:127.0.0.1",),)),
        host("v4-mapped-private"): Rule(aaaa=(("::ffff:10.0.0.1",),)),
        host("v4-compatible"): Rule(aaaa=(("::7f00:1",),)),
        host("nat64"): Rule(aaaa=(("64:ff9b::a00:1",),)),
        host("nat64-metadata"): Rule(aaaa=(("64:ff9b::a9fe:a9fe",),)),
        host("6to4-loopback"): Rule(aaaa=(("2002:7f00:1::1",),)),
        host("6to4-private"): Rule(aaaa=(("2002:c0a8:101::1",),)),
        host("teredo"): Rule(aaaa=((FORBIDDEN["teredo-loopback"],),)),
        host("v6-ula"): Rule(aaaa=(("fd00::1",),)),
        host("wrong-cert"): Rule(a=((WRONG_CERT_V4,),)),
        "*." + host("endless-header"): Rule(a=((ENDLESS_HEADER_V4,),)),
        "*." + host("gzip-tail"): Rule(a=((GZIP_TAIL_V4,),)),
        host("stream"): Rule(a=((STREAM_V4,),)),
        "*." + ATTACKER_DOMAIN: Rule(a=((ATTACKER_V4,),)),
    }


# What the fakes' certificates name: the lab's own servers, the attacker's, and a name nobody here uses.
LAB_NAMES = [host(label) for label in ("good", "v6", "slow", "very-slow", "rebind", "stream")] + [
    "*." + host(label) for label in ("fresh", "endless-header", "gzip-tail")
]
ATTACKER_NAMES = ["*." + ATTACKER_DOMAIN]
SOMEONE_ELSE = "someone-else.net"


class LabError(Exception):
    """A step the scenario needs in order to mean anything did not happen as it must."""


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def set_up_network(workdir: Path) -> None:
    """`lo` with every lab address, and /etc/resolv.conf naming the lab's DNS server only."""
    run("ip", "link", "set", "lo", "up")
    for address in (*PUBLIC, *FORBIDDEN.values(), DNS_ADDRESS):
        if address in ("127.0.0.1", "::1", DNS_ADDRESS):
            continue  # on lo already (127.0.0.0/8 and ::1)
        run("ip", "addr", "add", f"{address}/{128 if ':' in address else 32}", "dev", "lo")
    resolv = workdir / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_ADDRESS}\n")
    run("mount", "--bind", str(resolv), "/etc/resolv.conf")


@dataclass
class Fakes:
    good: RunningStandin
    good_v6: RunningStandin
    attacker: RunningStandin
    wrong_cert: RunningStandin
    endless_header: RawTLSServer
    gzip_tail: RawTLSServer
    stream: RawTLSServer


class Lab:
    """Everything inside the namespaces, set up by `main`; what it starts ends with `stack`."""

    def __init__(self, workdir: Path, stack: ExitStack) -> None:
        self.workdir = workdir
        self._stack = stack
        self.ca = trustme.CA()
        self.ca_file = workdir / "lab-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.client_tls = ssl.create_default_context(cafile=str(self.ca_file))
        self._lab_certificate = self._certificate(*LAB_NAMES)
        self.dns = LabDNS(DNS_ADDRESS, zone())
        self.dns.start()
        stack.callback(self.dns.close)
        self.canary = Canary([(address, port) for address in FORBIDDEN.values() for port in CANARY_PORTS])
        stack.callback(self.canary.close)
        self.fakes = self._start_fakes()
        self._shared: TobiraProcess | None = None

    def _certificate(self, *names: str) -> tuple[str, str]:
        cert = self.ca.issue_cert(*names)
        stem = self.workdir / names[0].replace("*", "_")
        cert_file, key_file = f"{stem}.crt", f"{stem}.key"
        for index, pem in enumerate(cert.cert_chain_pems):
            pem.write_to_path(cert_file, append=index > 0)
        cert.private_key_pem.write_to_path(key_file)
        return cert_file, key_file

    def _standin(self, address: str, certificate: tuple[str, str], config: StandinConfig) -> RunningStandin:
        cert_file, key_file = certificate
        standin = run_standin_in_thread(
            config, address, 443, certfile=cert_file, keyfile=key_file, keep_alive=IDLE_FOREVER
        )
        return self._stack.enter_context(standin)

    def _raw(self, address: str, name: str, behaviour: Behaviour) -> RawTLSServer:
        cert_file, key_file = self._lab_certificate
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        server = RawTLSServer(address, name, context, behaviour)
        server.start()
        self._stack.callback(server.close)
        return server

    def _start_fakes(self) -> Fakes:
        good = StandinConfig(base_url=f"https://{host('good')}", name=LAB_NAME)
        attacker = StandinConfig(
            base_url=f"https://misskey.{ATTACKER_DOMAIN}",
            name="Attacker Misskey",
            users=[StandinUser(id="9xmallory0", username="mallory", name="Mallory")],
        )
        return Fakes(
            good=self._standin(GOOD_V4, self._lab_certificate, good),
            good_v6=self._standin(GOOD_V6, self._lab_certificate, good),
            attacker=self._standin(ATTACKER_V4, self._certificate(*ATTACKER_NAMES), attacker),
            wrong_cert=self._standin(WRONG_CERT_V4, self._certificate(SOMEONE_ELSE), good),
            endless_header=self._raw(ENDLESS_HEADER_V4, host("endless-header"), endless_header),
            gzip_tail=self._raw(GZIP_TAIL_V4, host("gzip-tail"), gzip_then_endless),
            stream=self._raw(STREAM_V4, host("stream"), redirect_echo),
        )

    def start_tobira(self) -> TobiraProcess:
        """A new tobira process in the lab, trusting the lab's CA and nothing else."""
        env = {
            "SSL_CERT_FILE": str(self.ca_file),
            "TOBIRA_SECRET_KEYS": KEY,
            "TOBIRA_PERMISSIONS": PERMISSIONS,
            "TOBIRA_LOG_LEVEL": "debug",
            "TOBIRA_RESOLVE_TIMEOUT": str(RESOLVE_TIMEOUT),
        }
        return start_tobira(Path(tempfile.mkdtemp(dir=self.workdir, prefix="tobira-")), **env)

    def tobira(self) -> TobiraProcess:
        """The lab's shared tobira, for scenarios that leave nothing behind in it."""
        if self._shared is None:
            self._shared = self.start_tobira()
            self._stack.callback(self._shared.stop)
        return self._shared

    @contextmanager
    def fresh_tobira(self) -> Iterator[TobiraProcess]:
        """A tobira of one scenario's own, for loads that would otherwise weigh on the next scenario."""
        server = self.start_tobira()
        try:
            yield server
        finally:
            server.stop()

    def fake_request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """`url` on a fake, reached at its lab address without asking DNS (which scripts rebinding, and whose
        query counts scenarios read), the certificate checked against the URL's host."""
        parts = urlsplit(url)
        name = parts.hostname or ""
        rule = self.dns.rule(name)
        if rule is None or not (rule.a or rule.aaaa):
            raise LabError(f"{name} is no fake of the lab")
        address = (rule.a or rule.aaaa)[0][0]
        netloc = f"[{address}]" if ":" in address else address
        with httpx.Client(verify=self.client_tls, timeout=10) as client:
            return client.request(
                method,
                urlunsplit(parts._replace(netloc=netloc)),
                headers={"Host": name, **kwargs.pop("headers", {})},
                extensions={"sni_hostname": name},
                **kwargs,
            )

    def approve(self, consent_url: str, user: str) -> str:
        """Play the person approving on the fake's consent page; returns the callback URL it sends them to."""
        session = urlsplit(consent_url).path.rsplit("/", 1)[-1]
        shown = self.fake_request("GET", consent_url)
        if shown.status_code != 200:
            raise LabError(f"the consent page answered {shown.status_code}")
        origin = consent_url.split("/miauth/", 1)[0]
        accepted = self.fake_request("POST", f"{origin}/miauth/{session}/accept", data={"user": user})
        if accepted.status_code != 303:
            raise LabError(f"accepting answered {accepted.status_code}: {accepted.text[:300]}")
        location: str = accepted.headers["location"]
        return location


def _hits(canary: Canary, before: int) -> list[list[Any]]:
    return [[list(hit.listener), list(hit.peer)] for hit in canary.hits()[before:]]


def serve(lab: Lab, answers: TextIO) -> None:
    """Answer scenario requests from stdin until it ends, one JSON line each on `answers`."""
    from tests.lab_scenarios import SCENARIOS

    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        before = len(lab.canary.hits())
        try:
            result = SCENARIOS[request["scenario"]](lab, **request.get("args", {}))
            answer: dict[str, Any] = {"result": result, "canary": _hits(lab.canary, before)}
        except Exception:
            answer = {"error": traceback.format_exc(), "canary": _hits(lab.canary, before)}
        print(json.dumps(answer), file=answers, flush=True)


def main() -> None:
    workdir = Path(sys.argv[1])
    if os.getpid() != 1:
        sys.exit("tests.lab runs only as the first process of its own namespaces (see its docstring)")
    # stdout carries the answers alone: whatever else would print there goes to stderr (the lab's log).
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    set_up_network(workdir)
    started = time.monotonic()
    with ExitStack() as stack:
        lab = Lab(workdir, stack)
        print(f"lab ready in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        serve(lab, answers)


if __name__ == "__main__":
    # Run as `tests.lab`, not as `__main__`: the scenarios import this module, and must get this very one.
    from tests import lab as importable

    importable.main()
