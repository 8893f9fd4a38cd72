"""The network lab's DNS server: scripted answers to whatever the tobira under test looks up.

dnslib reads and writes the wire format; what each name gets is a `Rule`:

- successive answer sets for A and AAAA, the last one repeating, so "public first, private later" is
  `a=((public,), (private,))`; a `public_for` window instead switches to the later sets by time, since the
  number of queries one look-up makes differs between resolvers (glibc asks A and AAAA per getaddrinfo);
- a CNAME, answered with the target's own records as a (hostile) recursive resolver would add them, or alone;
- a delay before answering, or no answer at all (`silent`).

Every record has TTL 0, so nothing between tobira and this server may keep an answer. Names no rule covers
are NXDOMAIN. `*.suffix` covers every name below suffix. UDP only: every answer here fits in 512 bytes, so no
resolver falls back to TCP. `queries` records what was asked, and `later_served` counts, per name, the answers
taken from a later set than the first, so a test can tell that a rebinding was really played.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSError, DNSRecord

MAX_CNAME_CHAIN = 8


@dataclass(frozen=True)
class Rule:
    """What one name (or `*.suffix`) answers; see the module docstring."""

    a: tuple[tuple[str, ...], ...] = ()
    aaaa: tuple[tuple[str, ...], ...] = ()
    cname: str | None = None
    follow: bool = True  # with a CNAME: also answer the target's records
    delay: float = 0.0
    silent: bool = False
    public_for: float | None = None  # seconds after the first query during which the first set is answered


@dataclass(frozen=True)
class Query:
    name: str
    qtype: str
    at: float  # time.monotonic()


@dataclass
class _Progress:
    count: int = 0
    first: float | None = None


@dataclass
class LabDNS:
    """A UDP DNS server on (`address`, 53) answering from `zone`; `start()`, then `close()`."""

    address: str
    zone: dict[str, Rule]
    queries: list[Query] = field(default_factory=list)
    later_served: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: dict[tuple[str, str], _Progress] = {}
        self._stop = threading.Event()
        self._socket = socket.socket(
            socket.AF_INET6 if ":" in self.address else socket.AF_INET, socket.SOCK_DGRAM
        )
        self._socket.bind((self.address, 53))
        self._socket.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, name="lab-dns", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close()

    def asked(self, name: str) -> int:
        """How many queries (of any type) named `name`."""
        with self._lock:
            return sum(1 for query in self.queries if query.name == name)

    def names_asked(self, suffix: str) -> set[str]:
        """The distinct names asked that end with `suffix`."""
        with self._lock:
            return {query.name for query in self.queries if query.name.endswith(suffix)}

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                request = DNSRecord.parse(data)
            except DNSError:
                continue
            rule = self.rule(_name(request))
            if rule is not None and rule.silent:
                self._record(request)
                continue
            try:
                reply = self._answer(request, rule)
            except Exception:
                # A mistake in the zone must be loud, not a resolver waiting for an answer that never comes.
                traceback.print_exc()
                reply = request.reply()
                reply.header.rcode = RCODE.SERVFAIL
            if rule is not None and rule.delay:
                timer = threading.Timer(rule.delay, self._send, (reply, peer))
                timer.daemon = True
                timer.start()
            else:
                self._send(reply, peer)

    def _send(self, reply: DNSRecord, peer: tuple[str, int]) -> None:
        try:
            self._socket.sendto(reply.pack(), peer)
        except OSError:
            pass  # closed while a delayed answer waited: the lab is shutting down

    def _record(self, request: DNSRecord) -> None:
        with self._lock:
            self.queries.append(Query(_name(request), QTYPE[request.q.qtype], time.monotonic()))

    def rule(self, name: str) -> Rule | None:
        """The rule that answers `name`, if any."""
        if name in self.zone:
            return self.zone[name]
        labels = name.split(".")
        for start in range(1, len(labels)):
            rule = self.zone.get("*." + ".".join(labels[start:]))
            if rule is not None:
                return rule
        return None

    def _answer(self, request: DNSRecord, rule: Rule | None) -> DNSRecord:
        self._record(request)
        reply = request.reply()
        qtype = QTYPE[request.q.qtype]
        name = _name(request)
        if rule is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for _ in range(MAX_CNAME_CHAIN):
            if rule.cname is None:
                self._add_addresses(reply, name, qtype, rule)
                break
            reply.add_answer(RR(name, QTYPE.CNAME, rdata=CNAME(rule.cname), ttl=0))
            target = rule.cname.rstrip(".").lower()
            next_rule = self.rule(target)
            if not rule.follow or next_rule is None:
                break
            name, rule = target, next_rule
        return reply

    def _add_addresses(self, reply: DNSRecord, name: str, qtype: str, rule: Rule) -> None:
        sets = {"A": rule.a, "AAAA": rule.aaaa}.get(qtype, ())
        if not sets:
            return  # NOERROR with no records: the name exists, without this type
        with self._lock:
            progress = self._progress.setdefault((name, qtype), _Progress())
            now = time.monotonic()
            if progress.first is None:
                progress.first = now
            if rule.public_for is not None:
                index = 0 if now - progress.first < rule.public_for else len(sets) - 1
            else:
                index = min(progress.count, len(sets) - 1)
            progress.count += 1
            chosen = sets[index]
            if index:
                self.later_served[name] += 1
        for address in chosen:
            packed = tuple(ipaddress.ip_address(address).packed)  # dnslib reads no dotted IPv4 inside IPv6
            rdata = AAAA(packed) if qtype == "AAAA" else A(packed)
            reply.add_answer(RR(name, QTYPE.reverse[qtype], rdata=rdata, ttl=0))


def _name(request: DNSRecord) -> str:
    return str(request.q.qname).rstrip(".").lower()
