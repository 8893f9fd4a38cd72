"""tobira's small state store: one tiny interface, an SQLite and a Redis implementation.

tobira keeps very little state: ended sessions until they expire (so a replayed cookie is refused after
logout), one-shot claims (a MiAuth session is checked once, even when two callbacks race), fixed-window
rate-limit counters and small values such as legacy app secrets. `open_store(url)` picks the backend:

- `sqlite:///relative.db`, `sqlite:////absolute/path.db` (as in SQLAlchemy: what follows `sqlite:///` is a
  filesystem path) or `sqlite:///:memory:` — embedded, the default: one host, survives restarts, and safe
  for several processes on the same file.
- `redis://host:port/db`, `rediss://…`, `unix://…` — for several replicas sharing state. Keys are prefixed
  with `namespace:` so a shared Redis can hold other data.
- `redis+sentinel://[[user]:password@]host:port[,host:port…]/service[/db]` — a Redis primary watched by
  Sentinel (redis-py's Sentinel support): the sentinels are asked where the primary `service` is on every
  new connection, so after a failover tobira finds the new primary by itself. The password is the data
  nodes' (the sentinels are asked without one); a sentinel without a port is on 26379.

Every operation that must be atomic (`claim`, `incr`) is a single statement on either backend, so it is
atomic across processes and replicas, not only within one event loop.

Time: the SQLite store reads the injected `clock` (tests freeze it); Redis expires keys on the server's
own clock, so there `clock` is not used.
"""

from __future__ import annotations

import math
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis

Clock = Callable[[], float]
"""Seconds since the epoch, like `time.time`."""

PURGE_EVERY = 1000
"""The SQLite store deletes expired rows once every this many writes (they are never returned anyway)."""

BUSY_TIMEOUT_S = 5.0
"""How long an SQLite write waits for another process's write to finish before giving up."""

REDIS_TIMEOUT_S = 5.0
"""Connect and socket timeout for Redis unless the URL sets its own (query string options win)."""


class Store(Protocol):
    """Small keyed state with expiry. Keys are strings; values are bytes; ttls are seconds (> 0)."""

    errors: tuple[type[Exception], ...]
    """What the backend raises when it is unusable (a file it cannot write, a server that does not answer)."""

    async def claim(self, key: str, ttl: float) -> bool:
        """Create `key` for `ttl` seconds if it is absent or expired; True only for the call that created it.

        Atomic across processes and replicas: of any number of racing calls, exactly one wins.
        """
        ...

    async def exists(self, key: str) -> bool:
        """Whether `key` is present and not expired."""
        ...

    async def incr(self, key: str, ttl: float) -> int:
        """Count one more in a fixed window and return the count, atomically.

        An absent or expired key starts at 1 and expires in `ttl` seconds; otherwise the count goes up by
        one and the expiry stays where it was.
        """
        ...

    async def get(self, key: str) -> bytes | None:
        """The value `put` under `key`, or None if absent or expired."""
        ...

    async def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` under `key`, replacing any value and expiry; `ttl` None keeps it until deleted."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; removing an absent key is not an error."""
        ...

    async def ping(self) -> None:
        """Return if the backend answers and can write; raise one of `errors` if it cannot."""
        ...

    async def close(self) -> None:
        """Release the connection(s); the store is unusable afterwards."""
        ...


def open_store(url: str, *, clock: Clock = time.time, namespace: str = "tobira") -> Store:
    """Open the store `url` names (see the module docstring for the forms).

    Raises ValueError for any other scheme or a malformed SQLite or Sentinel URL; the message never repeats
    the URL, which may hold a password. Redis connects lazily, on the first command; SQLite opens the file
    now and raises `sqlite3.Error` if it cannot.
    """
    scheme = _scheme(url)
    if scheme == "sqlite":
        return SQLiteStore(_sqlite_path(url), clock=clock)
    if scheme in ("redis", "rediss", "unix"):
        # Imported here: `redis` takes ~0.2 s to import and the default deployment never needs it.
        from redis.asyncio import Redis

        client = Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S)
        return RedisStore(client, namespace=namespace)
    if scheme == "redis+sentinel":
        primary, sentinels = _sentinel_clients(parse_sentinel_url(url))
        return RedisStore(primary, namespace=namespace, also_close=sentinels)
    raise ValueError(_unsupported(scheme))


def store_url_problem(url: str) -> str | None:
    """What `open_store` would refuse in `url` (said without repeating it), or None; opens nothing.

    For the configuration's check, so that a bad URL stops start-up once, before any worker starts.
    """
    scheme = _scheme(url)
    try:
        if scheme == "sqlite":
            _sqlite_path(url)
        elif scheme == "redis+sentinel":
            parse_sentinel_url(url)
        elif scheme not in ("redis", "rediss", "unix"):
            return _unsupported(scheme)
    except ValueError as exc:
        return str(exc)
    return None


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:  # an unclosed IPv6 bracket: the scheme is still what comes before "://"
        return url.partition("://")[0].lower()


def _unsupported(scheme: str) -> str:
    return (
        f"unsupported store URL scheme {scheme!r}: use sqlite:///path.db, redis://, rediss://, unix:// or"
        " redis+sentinel://"
    )


SENTINEL_PORT = 26379
_SENTINEL_FORM = "a Sentinel store URL is redis+sentinel://[:password@]host:port[,host:port…]/service[/db]"


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a `redis+sentinel://` URL names: where the sentinels are, which primary, which database."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, service, database and credentials of `redis+sentinel://…`; ValueError if malformed.

    Percent-escapes in the user name and password are decoded. The message never repeats the URL.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # a bracket left open; its message is fine, but say what the form is
        raise ValueError(_SENTINEL_FORM) from None
    if parts.scheme.lower() != "redis+sentinel" or parts.query or parts.fragment:
        raise ValueError(_SENTINEL_FORM)
    credentials, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if colon else None)
    sentinels = tuple(_sentinel_address(address) for address in hosts.split(","))
    path = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if not 1 <= len(path) <= 2 or not path[0] or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(_SENTINEL_FORM)
    return SentinelTarget(
        sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0, username, password
    )


def _sentinel_address(text: str) -> tuple[str, int]:
    host, port = text, str(SENTINEL_PORT)
    if text.startswith("["):  # [IPv6]:port
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(_SENTINEL_FORM)
        port = rest[1:] or port
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(_SENTINEL_FORM)
    return host, int(port)


def _sentinel_clients(target: SentinelTarget) -> tuple[Redis, list[Redis]]:
    """A client of the primary `target` names, and the sentinels' clients it asks (to close with it)."""
    # Imported here, as for plain Redis.
    from redis.asyncio.sentinel import Sentinel

    timeouts = {"socket_connect_timeout": REDIS_TIMEOUT_S, "socket_timeout": REDIS_TIMEOUT_S}
    # redis-py leaves Sentinel's constructor unannotated.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs=timeouts,
        db=target.db,
        username=target.username,
        password=target.password,
        **timeouts,
    )
    return sentinel.master_for(target.service), list(sentinel.sentinels)


def _sqlite_path(url: str) -> str:
    """The filesystem path (or `:memory:`) of an `sqlite:///…` URL; ValueError if it names none."""
    prefix = "sqlite:///"
    if url[: len(prefix)].lower() != prefix or len(url) == len(prefix):
        raise ValueError(
            "an SQLite store URL is sqlite:///relative.db, sqlite:////abs.db or sqlite:///:memory:"
        )
    return url[len(prefix) :]


def _check_ttl(ttl: float) -> None:
    # Redis refuses zero and negative expiries; refuse them on SQLite too so both behave alike.
    if not 0 < ttl < math.inf:
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB,
    expires_at REAL
) WITHOUT ROWID
"""

# Unqualified columns in DO UPDATE are the existing row's. An expired row counts as absent: the upsert
# overwrites it, and only a row inserted or overwritten counts as a change.
_CLAIM = """
INSERT INTO kv (key, value, expires_at) VALUES (:key, X'31', :expires_at)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
WHERE expires_at <= :now
"""

_INCR = """
INSERT INTO kv (key, value, expires_at) VALUES (:key, 1, :expires_at)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN expires_at <= :now THEN 1 ELSE value + 1 END,
    expires_at = CASE WHEN expires_at <= :now THEN excluded.expires_at ELSE expires_at END
RETURNING value
"""

_PUT = """
INSERT INTO kv (key, value, expires_at) VALUES (:key, :value, :expires_at)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""

# CAST: counters are stored as integers; read back they are their decimal digits, as on Redis.
_GET = "SELECT CAST(value AS BLOB) FROM kv WHERE key = :key AND (expires_at IS NULL OR expires_at > :now)"
_EXISTS = "SELECT 1 FROM kv WHERE key = :key AND (expires_at IS NULL OR expires_at > :now)"
_DELETE = "DELETE FROM kv WHERE key = :key"
_PURGE = "DELETE FROM kv WHERE expires_at <= :now"
# Readiness writes a new small row, expired already, and removes it: a file that cannot be written, or a disk
# with no room for one more row, fails it as it would fail a sign-out.
_PING = "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (:key, zeroblob(64), 0)"


class SQLiteStore:
    """The embedded store: one SQLite file (or memory), one table, safe for several processes.

    The stdlib `sqlite3` is called synchronously from the event loop on purpose: every statement here is a
    single-row lookup or write that takes microseconds, far less than handing it to a thread would cost.
    WAL mode lets readers run beside a writer, and synchronous=NORMAL spares each write an fsync (a power
    cut may lose the last writes, never the file's integrity). A writer in another process makes us wait
    at most `BUSY_TIMEOUT_S`, which with writes this small does not happen in practice. Each statement runs in
    autocommit mode, so each is its own atomic transaction.
    """

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: str, *, clock: Clock = time.time) -> None:
        """Open (creating with mode 0600, and its directory, if needed) the database at `path`."""
        if path != ":memory:":
            file = Path(path)
            file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # SQLite gives the -wal and -shm files the database file's mode.
            file.touch(mode=0o600, exist_ok=True)
        self.path = path
        self._clock = clock
        self._writes = 0
        # check_same_thread=False: the module is built serialized (threadsafety 3) and every use here is a
        # single statement, so a store opened in one thread may serve an event loop in another.
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute(_SCHEMA)
            self._purge()
        except BaseException:
            self._db.close()
            raise

    async def claim(self, key: str, ttl: float) -> bool:
        _check_ttl(ttl)
        now = self._clock()
        created = self._db.execute(_CLAIM, {"key": key, "expires_at": now + ttl, "now": now}).rowcount == 1
        self._wrote()
        return created

    async def exists(self, key: str) -> bool:
        return self._db.execute(_EXISTS, {"key": key, "now": self._clock()}).fetchone() is not None

    async def incr(self, key: str, ttl: float) -> int:
        _check_ttl(ttl)
        now = self._clock()
        (count,) = self._db.execute(_INCR, {"key": key, "expires_at": now + ttl, "now": now}).fetchone()
        self._wrote()
        return int(count)

    async def get(self, key: str) -> bytes | None:
        row = self._db.execute(_GET, {"key": key, "now": self._clock()}).fetchone()
        return None if row is None else bytes(row[0])

    async def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        expires_at = None
        if ttl is not None:
            _check_ttl(ttl)
            expires_at = self._clock() + ttl
        self._db.execute(_PUT, {"key": key, "value": value, "expires_at": expires_at})
        self._wrote()

    async def delete(self, key: str) -> None:
        self._db.execute(_DELETE, {"key": key})

    async def ping(self) -> None:
        key = f"ping:{secrets.token_hex(16)}"
        self._db.execute(_PING, {"key": key})
        self._db.execute(_DELETE, {"key": key})

    async def close(self) -> None:
        self._db.close()

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % PURGE_EVERY == 0:
            self._purge()

    def _purge(self) -> None:
        self._db.execute(_PURGE, {"now": self._clock()})


# INCR, and set the window's expiry only when this call started it: one script, so no other client can
# slip in between and no crash can leave a counter that never expires.
_INCR_LUA = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
"""


def _ttl_ms(ttl: float) -> int:
    _check_ttl(ttl)
    return math.ceil(ttl * 1000)


class RedisStore:
    """The shared store: Redis, keys under `namespace:`, expiry on the server's clock."""

    def __init__(self, client: Redis, *, namespace: str, also_close: Sequence[Redis] = ()) -> None:
        from redis import RedisError

        self.errors: tuple[type[Exception], ...] = (RedisError,)
        self._redis = client
        self._also_close = also_close
        self._prefix = namespace + ":"
        self._incr = client.register_script(_INCR_LUA)

    async def claim(self, key: str, ttl: float) -> bool:
        return bool(await self._redis.set(self._prefix + key, b"1", nx=True, px=_ttl_ms(ttl)))

    async def exists(self, key: str) -> bool:
        return bool(await self._redis.exists(self._prefix + key))

    async def incr(self, key: str, ttl: float) -> int:
        return int(await self._incr(keys=[self._prefix + key], args=[_ttl_ms(ttl)]))

    async def get(self, key: str) -> bytes | None:
        # decode_responses is off, so Redis answers bytes.
        return cast(bytes | None, await self._redis.get(self._prefix + key))

    async def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._redis.set(self._prefix + key, value, px=None if ttl is None else _ttl_ms(ttl))

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._prefix + key)

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
        for client in self._also_close:
            await client.aclose()
