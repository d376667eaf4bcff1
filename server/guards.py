"""What stands before authentication and the handlers, the same for gRPC and HTTP.

* :class:`NetworkPolicy` — who the client is (its address, ``X-Forwarded-For`` believed only
  from a trusted proxy) and whether ``server.allowed_networks`` lets it in.
* :class:`RequestLimiter` — ``server.requests_per_second`` per API token: a token bucket
  holding twice the rate, so a client may burst but not sustain more.
* :class:`AuthFailureThrottle` — after :data:`AUTH_FAILURES` failed authentications within
  :data:`AUTH_WINDOW` seconds from one client address, that address is refused for
  :data:`AUTH_BLOCK` seconds, right token or not: guessing tokens becomes hopeless.
* :meth:`Guards.admit` — all of them in their one order, for a request of either transport:
  the allow-list, the failed-authentication throttle, the token (a failure is recorded), the
  token's rate. It answers a :class:`~tgbroadcast.server.auth.Caller` or a :class:`Refusal`
  whose words are the same on both; each transport only maps a refusal to its status.

One :class:`Guards` serves both listeners, so limits and throttles count over both. Every
clock is injectable (a monotonic ``() -> float``) so tests need no sleeping.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import logging
import math
import time
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from tgbroadcast.server.auth import Caller, TokenCheck

logger = logging.getLogger(__name__)

IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Clock: TypeAlias = Callable[[], float]

AUTH_FAILURES: Final = 10
"""Failed authentications from one client address tolerated within :data:`AUTH_WINDOW`."""
AUTH_WINDOW: Final = 60.0
AUTH_BLOCK: Final = 60.0
"""Seconds an address that failed too often is refused, whatever it sends."""
MAX_TRACKED_ADDRESSES: Final = 10_000
"""Client addresses the failed-authentication throttle remembers at most, so an attacker with
many addresses cannot grow its memory without limit. When full, it forgets addresses whose
failures and block are over, then the least recently failing one not blocked; a blocked
address is never forgotten before its block ends (see :class:`AuthFailureThrottle`)."""
IPV6_CLIENT_PREFIX: Final = 64
"""An IPv6 client is throttled by its /64: one host usually holds a whole /64, so counting
single addresses would let it rotate through billions of them."""
MAX_FORWARDED_HOPS: Final = 32
"""``X-Forwarded-For`` hops read at most, from the right."""


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> IpAddress | None:
    """The IP address ``text`` names (``1.2.3.4``, ``::1``, ``[::1]``, ``1.2.3.4:80``,
    ``[::1]:80``), IPv4-mapped IPv6 as IPv4; None when it names none. Remembered: every call
    of a connection names the same peer, and parsing one was a percent of a small send."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def grpc_peer_address(peer: str | None) -> str:
    """The address of a gRPC ``context.peer()`` (``ipv4:127.0.0.1:5555``,
    ``ipv6:%5B::1%5D:5555``), as it came when it is neither (``unix:...``).

    gRPC writes a peer as a URI, so an IPv6 peer's brackets (and a zone's ``%``) come
    percent-encoded: decoded here, or no IPv6 client would be recognised — refused by any
    allow-list and counted by the throttle per source port instead of per /64."""
    if not peer:
        return ""
    scheme, _, rest = peer.partition(":")
    if scheme in ("ipv4", "ipv6"):
        return urllib.parse.unquote(rest)
    return peer


class NetworkPolicy:
    """``server.allowed_networks`` (empty: everyone) and ``server.trusted_proxies``."""

    def __init__(
        self,
        allowed_networks: Iterable[IpNetwork] = (),
        trusted_proxies: Iterable[IpNetwork] = (),
    ) -> None:
        self._allowed = tuple(allowed_networks)
        self._proxies = tuple(trusted_proxies)

    @property
    def restricted(self) -> bool:
        return bool(self._allowed)

    def client_address(self, peer: str | None, forwarded_for: Iterable[str] = ()) -> str:
        """The client's address, normalised (``::ffff:1.2.3.4`` is ``1.2.3.4``).

        ``forwarded_for``: the ``X-Forwarded-For`` values, in order. They are read only while
        the hop at hand is a trusted proxy, from the right: the answer is the right-most hop
        not a trusted proxy (each proxy appends who connected to it, so everything left of
        that hop is whatever the client chose to send). A hop that is not an address ends
        the walk: the request is then the last trusted proxy's. Without a parseable peer,
        the peer string as it came (it then matches no network).
        """
        address = parse_address(peer or "")
        if address is None:
            return peer or ""
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
            if not self._trusted(address):
                break
            forwarded = parse_address(hop)
            if forwarded is None:
                break
            address = forwarded
        return str(address)

    def allows(self, client_address: str) -> bool:
        """Whether ``client_address`` (from :meth:`client_address`) may be served."""
        if not self._allowed:
            return True
        address = parse_address(client_address)
        return address is not None and any(address in network for network in self._allowed)

    def _trusted(self, address: IpAddress) -> bool:
        return any(address in network for network in self._proxies)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


class RequestLimiter:
    """A token bucket per key (the API token's name): ``rate`` requests a second, bursts of
    twice that (at least one request, for rates below one every two seconds). ``rate`` 0
    switches it off.

    Keys are the configured tokens' names, so the buckets are as many as the tokens.
    """

    def __init__(self, rate: float, *, clock: Clock = time.monotonic) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be 0 or positive, not {rate}")
        self._rate = rate
        self._burst = max(1.0, 2.0 * rate)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, when)

    @property
    def rate(self) -> float:
        return self._rate

    def acquire(self, key: str) -> float:
        """Take one request for ``key``: 0.0 when it may go ahead, else the seconds until it
        could (for ``Retry-After``); a refused request takes nothing."""
        if not self._rate:
            return 0.0
        now = self._clock()
        tokens, then = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - then) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate


@dataclass(slots=True)
class _Failures:
    times: deque[float]
    """The failures within the window (cleared when they block the address)."""
    last: float
    """When the latest failure happened: the throttle keeps addresses in this order."""
    blocked_until: float = 0.0


class AuthFailureThrottle:
    """Failed authentications per client address (IPv6 per /64).

    :meth:`blocked` says how long an address must still wait; :meth:`failed` records one
    failure, and the one that makes :data:`AUTH_FAILURES` within :data:`AUTH_WINDOW` blocks
    the address for :data:`AUTH_BLOCK` seconds.

    At most ``max_addresses`` are remembered. To make room for a new one it forgets, in this
    order, addresses whose failures are older than the window and whose block (if any) is
    over, then the least recently failing address that is not blocked (its count starts
    again). A blocked address stays blocked: while every remembered address is blocked, a new
    one's failures are not counted (one WARNING says so) until the first block ends. So the
    throttle holds for up to ``max_addresses`` addresses (IPv6: /64s) failing within a
    window; an attacker with more may have counts forgotten before they block, but never a
    block lifted early.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        failures: int = AUTH_FAILURES,
        window: float = AUTH_WINDOW,
        block: float = AUTH_BLOCK,
    ) -> None:
        if max_addresses < 1:
            raise ValueError("max_addresses must be at least 1")
        self._clock = clock
        self._max_addresses = max_addresses
        self._failures = failures
        self._window = window
        self._block = block
        self._seen: OrderedDict[str, _Failures] = OrderedDict()  # the least recently failing first
        self._full_until = 0.0
        """While the clock is below this, every remembered address is blocked (no room)."""
        self._warned = -math.inf

    def blocked(self, client_address: str) -> float:
        """Seconds ``client_address`` is still refused; 0.0 when it may try."""
        record = self._seen.get(_key(client_address))
        if record is None:
            return 0.0
        return max(0.0, record.blocked_until - self._clock())

    def failed(self, client_address: str) -> None:
        """Record a failed authentication from ``client_address``."""
        now = self._clock()
        key = _key(client_address)
        record = self._seen.pop(key, None)
        if record is None:
            if not self._make_room(now):
                return
            record = _Failures(times=deque(maxlen=self._failures), last=now)
        self._seen[key] = record  # the most recently failing last
        record.last = now
        while record.times and record.times[0] <= now - self._window:
            record.times.popleft()
        record.times.append(now)
        if len(record.times) >= self._failures:
            record.blocked_until = now + self._block
            record.times.clear()

    def __len__(self) -> int:
        return len(self._seen)

    def _make_room(self, now: float) -> bool:
        """Whether one more address may be remembered, forgetting one or more if need be."""
        if len(self._seen) < self._max_addresses:
            return True
        if now < self._full_until:
            return False
        self._forget_expired(now)
        if len(self._seen) < self._max_addresses or self._forget_unblocked(now):
            return True
        # Every address is blocked: no room before the first block ends.
        self._full_until = min(record.blocked_until for record in self._seen.values())
        if now >= self._warned + self._block:  # at most one line a block period
            self._warned = now
            logger.warning(
                "failed-authentication throttle full of blocked addresses; new ones are not "
                "counted until a block ends",
                extra={"addresses": len(self._seen)},
            )
        return False

    def _forget_expired(self, now: float) -> None:
        """Forget the addresses whose failures are all older than the window and that are
        not blocked: they are the front of the order, up to the first recent failure."""
        expired = []
        for key, record in self._seen.items():
            if record.last > now - self._window:
                break
            if record.blocked_until <= now:
                expired.append(key)
        for key in expired:
            del self._seen[key]

    def _forget_unblocked(self, now: float) -> bool:
        """Forget the least recently failing address that is not blocked, if there is one."""
        for key, record in self._seen.items():
            if record.blocked_until <= now:
                del self._seen[key]
                return True
        return False


def _key(client_address: str) -> str:
    """What failures are counted by: the address, or an IPv6 address's /64."""
    address = parse_address(client_address)
    if isinstance(address, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False)
        return str(network)
    return client_address


class RefusalKind(enum.Enum):
    """Why a request is refused; each transport has one status for each."""

    FORBIDDEN = "forbidden"
    """The client's address is not in ``server.allowed_networks`` (403, PERMISSION_DENIED)."""
    UNAUTHENTICATED = "unauthenticated"
    """No API token of ours (401, UNAUTHENTICATED)."""
    TOO_MANY = "too_many"
    """A limit: blocked after failed authentications, or over the token's rate (429 with
    ``Retry-After``, RESOURCE_EXHAUSTED with ``RetryInfo``)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request :meth:`Guards.admit` turned away, in words fit for the client."""

    kind: RefusalKind
    detail: str
    retry_after: float | None = None
    """Seconds until trying again may help (``TOO_MANY`` only)."""
    caller: Caller | None = None
    """Who it was, when the token was right (over the rate): for the access log."""


UNAUTHENTICATED: Final = "missing or invalid API token (authorization: Bearer <token>)"
BLOCKED: Final = "too many failed authentications from this address; try later"


@dataclass(frozen=True, slots=True, kw_only=True)
class Guards:
    """The guards one server process applies on both listeners (shared, so a token's rate
    and an address's failures count over gRPC and HTTP together)."""

    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    limiter: RequestLimiter = field(default_factory=lambda: RequestLimiter(0.0))
    auth_failures: AuthFailureThrottle = field(default_factory=AuthFailureThrottle)

    @classmethod
    def create(
        cls,
        *,
        allowed_networks: Iterable[IpNetwork] = (),
        trusted_proxies: Iterable[IpNetwork] = (),
        requests_per_second: float = 0.0,
        clock: Clock = time.monotonic,
    ) -> Guards:
        return cls(
            network=NetworkPolicy(allowed_networks, trusted_proxies),
            limiter=RequestLimiter(requests_per_second, clock=clock),
            auth_failures=AuthFailureThrottle(clock=clock),
        )

    def admit(
        self,
        tokens: TokenCheck,
        client_address: str,
        authorization: str | bytes | None,
        *,
        public: bool,
    ) -> Caller | Refusal | None:
        """Whether a request from ``client_address`` (from :meth:`NetworkPolicy.client_address`)
        carrying ``authorization`` may be served: its :class:`Caller`, or None for a
        ``public`` one (no token needed: only the allow-list applies), or why not.

        The order matters: an address outside the allow-list never reaches authentication
        (nor counts towards the throttle); a blocked address is refused before its token is
        looked at, so guessing stops; only an authenticated request draws from its token's
        bucket.
        """
        if not self.network.allows(client_address):
            detail = f"client address {client_address[:100]} is not in server.allowed_networks"
            return Refusal(RefusalKind.FORBIDDEN, detail)
        if public:
            return None
        if wait := self.auth_failures.blocked(client_address):
            return Refusal(RefusalKind.TOO_MANY, BLOCKED, wait)
        grant = tokens.identify(authorization)
        if grant is None:
            self.auth_failures.failed(client_address)
            return Refusal(RefusalKind.UNAUTHENTICATED, UNAUTHENTICATED)
        caller = Caller(grant.name, client_address, grant.scopes, grant.bots)
        if wait := self.limiter.acquire(grant.name):
            detail = (
                f"more than server.requests_per_second ({self.limiter.rate:g}) with this API "
                "token; slow down"
            )
            return Refusal(RefusalKind.TOO_MANY, detail, wait, caller)
        return caller
