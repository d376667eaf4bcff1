"""The transport-neutral guards on a fake clock: client addresses, the allow-list, the token
bucket, the failed-authentication throttle and their order in :meth:`Guards.admit`."""

from __future__ import annotations

import ipaddress

import pytest

from tgbroadcast.server.auth import Caller, TokenCheck
from tgbroadcast.server.guards import (
    AUTH_BLOCK,
    AUTH_FAILURES,
    AUTH_WINDOW,
    BLOCKED,
    AuthFailureThrottle,
    Guards,
    NetworkPolicy,
    Refusal,
    RefusalKind,
    RequestLimiter,
    grpc_peer_address,
    parse_address,
    retry_after_header,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def networks(*cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(cidr) for cidr in cidrs]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("10.1.2.3:8080", "10.1.2.3"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("::ffff:192.0.2.9", "192.0.2.9"),
        ("[::ffff:192.0.2.9]:5555", "192.0.2.9"),
        ("fe80::1%eth0", "fe80::1"),
        (" 192.0.2.1 ", "192.0.2.1"),
    ],
)
def test_addresses_are_read_in_every_usual_spelling(text: str, expected: str) -> None:
    assert str(parse_address(text)) == expected


@pytest.mark.parametrize("text", ["", "unknown", "[::1", "1.2.3", "999.1.1.1", "host:80", "_"])
def test_what_is_not_an_address_is_none(text: str) -> None:
    assert parse_address(text) is None


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("ipv4:127.0.0.1:5555", "127.0.0.1:5555"),
        # grpcio writes peers as URIs: an IPv6 address's brackets and zone come encoded.
        ("ipv6:%5B::1%5D:37538", "[::1]:37538"),
        ("ipv6:%5B::ffff:127.0.0.1%5D:5555", "[::ffff:127.0.0.1]:5555"),
        ("ipv6:%5Bfe80::1%25eth0%5D:5555", "[fe80::1%eth0]:5555"),
        ("ipv6:[::1]:5555", "[::1]:5555"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
        ("", ""),
        (None, ""),
    ],
)
def test_grpc_peers_lose_their_scheme(peer: str | None, expected: str) -> None:
    assert grpc_peer_address(peer) == expected


def test_an_encoded_ipv6_peer_is_its_address() -> None:
    policy = NetworkPolicy(networks("::1/128"))
    address = policy.client_address(grpc_peer_address("ipv6:%5B::1%5D:37538"))
    assert address == "::1"
    assert policy.allows(address)
    mapped = policy.client_address(grpc_peer_address("ipv6:%5B::ffff:127.0.0.1%5D:5555"))
    assert mapped == "127.0.0.1"


def test_an_empty_allow_list_lets_everyone_in() -> None:
    policy = NetworkPolicy()
    assert not policy.restricted
    assert policy.allows("203.0.113.5")
    assert policy.allows("not an address")


def test_the_allow_list_takes_ipv4_and_ipv6_networks() -> None:
    policy = NetworkPolicy(networks("10.0.0.0/8", "2001:db8::/32", "127.0.0.2/32"))
    assert policy.allows("10.200.3.4")
    assert policy.allows("127.0.0.2")
    assert policy.allows("2001:db8:ffff::1")
    assert not policy.allows("127.0.0.1")
    assert not policy.allows("11.0.0.1")
    assert not policy.allows("2001:db9::1")
    assert not policy.allows("")
    assert not policy.allows("unix:/tmp/socket")


def test_an_ipv4_mapped_peer_is_its_ipv4_address() -> None:
    policy = NetworkPolicy(networks("192.0.2.0/24"))
    address = policy.client_address("::ffff:192.0.2.10")
    assert address == "192.0.2.10"
    assert policy.allows(address)


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    policy = NetworkPolicy(trusted_proxies=networks("10.0.0.1/32"))
    assert policy.client_address("203.0.113.7", ["127.0.0.1"]) == "203.0.113.7"


def test_forwarded_for_from_a_trusted_proxy_gives_the_rightmost_untrusted_hop() -> None:
    policy = NetworkPolicy(trusted_proxies=networks("10.0.0.0/24"))
    # The client forged "127.0.0.1"; the proxies appended what really connected to them.
    assert (
        policy.client_address("10.0.0.1", ["127.0.0.1, 198.51.100.4", "10.0.0.2"]) == "198.51.100.4"
    )


def test_forwarded_for_only_through_trusted_proxies_gives_the_leftmost_hop() -> None:
    policy = NetworkPolicy(trusted_proxies=networks("10.0.0.0/24"))
    assert policy.client_address("10.0.0.1", ["10.0.0.3, 10.0.0.2"]) == "10.0.0.3"


def test_a_garbled_hop_leaves_the_request_to_the_last_trusted_proxy() -> None:
    policy = NetworkPolicy(trusted_proxies=networks("10.0.0.0/24"))
    assert policy.client_address("10.0.0.1", ["198.51.100.4, garbage"]) == "10.0.0.1"


def test_forwarded_hops_may_carry_ports_and_ipv6() -> None:
    policy = NetworkPolicy(trusted_proxies=networks("::1/128"))
    assert policy.client_address("::1", ["[2001:db8::5]:4711"]) == "2001:db8::5"


def test_without_a_parseable_peer_the_peer_string_stands() -> None:
    policy = NetworkPolicy(networks("0.0.0.0/0"), trusted_proxies=networks("0.0.0.0/0"))
    assert policy.client_address("unix:/tmp/s", ["1.2.3.4"]) == "unix:/tmp/s"
    assert not policy.allows("unix:/tmp/s")
    assert policy.client_address(None) == ""


def test_the_limiter_allows_a_burst_of_twice_the_rate_then_says_how_long_to_wait() -> None:
    clock = FakeClock()
    limiter = RequestLimiter(5.0, clock=clock)
    assert [limiter.acquire("a") for _ in range(10)] == [0.0] * 10
    assert limiter.acquire("a") == pytest.approx(0.2)
    assert limiter.acquire("b") == 0.0  # every token has its own bucket
    clock.advance(0.2)
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == pytest.approx(0.2)


def test_the_limiter_refills_at_the_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = RequestLimiter(1.0, clock=clock)
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == pytest.approx(1.0)
    clock.advance(3600)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_a_refused_request_takes_nothing_from_the_bucket() -> None:
    clock = FakeClock()
    limiter = RequestLimiter(1.0, clock=clock)
    limiter.acquire("a")
    limiter.acquire("a")
    for _ in range(100):
        assert limiter.acquire("a") > 0
    clock.advance(1.0)
    assert limiter.acquire("a") == 0.0


def test_a_zero_rate_is_no_limit() -> None:
    limiter = RequestLimiter(0.0)
    assert all(limiter.acquire("a") == 0.0 for _ in range(10_000))


@pytest.mark.parametrize("rate", [-1.0, float("inf"), float("nan")])
def test_a_rate_must_be_finite_and_not_negative(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        RequestLimiter(rate)


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.001, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")]
)
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


def test_ten_failures_in_a_minute_block_the_address_for_a_minute() -> None:
    clock = FakeClock()
    throttle = AuthFailureThrottle(clock=clock)
    for _ in range(AUTH_FAILURES - 1):
        throttle.failed("192.0.2.1")
        clock.advance(1.0)
    assert throttle.blocked("192.0.2.1") == 0.0
    throttle.failed("192.0.2.1")
    assert throttle.blocked("192.0.2.1") == AUTH_BLOCK
    assert throttle.blocked("192.0.2.2") == 0.0
    clock.advance(AUTH_BLOCK - 1)
    assert throttle.blocked("192.0.2.1") == pytest.approx(1.0)
    clock.advance(1)
    assert throttle.blocked("192.0.2.1") == 0.0
    throttle.failed("192.0.2.1")  # a fresh count after the block
    assert throttle.blocked("192.0.2.1") == 0.0


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = FakeClock()
    throttle = AuthFailureThrottle(clock=clock)
    for _ in range(AUTH_FAILURES * 3):
        throttle.failed("192.0.2.1")
        clock.advance(AUTH_WINDOW / (AUTH_FAILURES - 1) + 0.01)
    assert throttle.blocked("192.0.2.1") == 0.0


def test_an_ipv6_client_is_counted_by_its_slash_64() -> None:
    clock = FakeClock()
    throttle = AuthFailureThrottle(clock=clock)
    for host in range(AUTH_FAILURES):
        throttle.failed(f"2001:db8:0:1::{host + 1:x}")
    assert throttle.blocked("2001:db8:0:1:ffff::1") == AUTH_BLOCK
    assert throttle.blocked("2001:db8:0:2::1") == 0.0


def address(number: int) -> str:
    return str(ipaddress.IPv4Address(0x0A000000 + number))


def block(throttle: AuthFailureThrottle, client: str) -> None:
    for _ in range(AUTH_FAILURES):
        throttle.failed(client)
    assert throttle.blocked(client) > 0


def test_the_throttle_remembers_a_bounded_number_of_addresses() -> None:
    clock = FakeClock()
    throttle = AuthFailureThrottle(clock=clock, max_addresses=100)
    for host in range(10_000):
        throttle.failed(address(host))
        assert len(throttle) <= 100
    assert len(throttle) == 100


def test_a_blocked_address_is_never_forgotten_to_make_room() -> None:
    clock = FakeClock()
    throttle = AuthFailureThrottle(clock=clock, max_addresses=100)
    block(throttle, "192.0.2.1")  # the least recently failing of all below
    for host in range(10_000):
        throttle.failed(address(host))
    assert throttle.blocked("192.0.2.1") == AUTH_BLOCK
    assert len(throttle) == 100


def test_addresses_whose_failures_and_block_are_over_are_forgotten_first() -> None:
    clock = FakeClock()
    throttle = AuthFailureThrottle(clock=clock, max_addresses=4)
    block(throttle, "192.0.2.1")
    throttle.failed("192.0.2.2")
    clock.advance(max(AUTH_WINDOW, AUTH_BLOCK))  # both are over: 192.0.2.1 and 192.0.2.2
    for _ in range(AUTH_FAILURES - 1):
        throttle.failed("192.0.2.3")  # recent, one failure short of a block
    throttle.failed("192.0.2.4")
    throttle.failed("192.0.2.5")
    throttle.failed("192.0.2.6")
    assert len(throttle) == 4
    # The two expired ones made the room; the recent count of .3 was kept.
    throttle.failed("192.0.2.3")
    assert throttle.blocked("192.0.2.3") == AUTH_BLOCK


def test_when_none_has_expired_the_least_recently_failing_unblocked_one_goes() -> None:
    clock = FakeClock()
    throttle = AuthFailureThrottle(clock=clock, max_addresses=3)
    block(throttle, "192.0.2.1")
    for _ in range(AUTH_FAILURES - 1):
        throttle.failed("192.0.2.2")
    throttle.failed("192.0.2.3")
    throttle.failed("192.0.2.4")  # .2 goes, not the blocked .1
    assert throttle.blocked("192.0.2.1") == AUTH_BLOCK
    throttle.failed("192.0.2.2")  # counted afresh: one failure
    assert throttle.blocked("192.0.2.2") == 0.0
    assert len(throttle) == 3


def test_while_every_remembered_address_is_blocked_new_ones_are_not_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    throttle = AuthFailureThrottle(clock=clock, max_addresses=3)
    for host in range(3):
        block(throttle, address(host))
        clock.advance(1.0)
    for _ in range(AUTH_FAILURES * 2):
        throttle.failed("192.0.2.9")
    assert throttle.blocked("192.0.2.9") == 0.0
    assert all(throttle.blocked(address(host)) > 0 for host in range(3))
    assert len(throttle) == 3
    warnings = [record for record in caplog.records if record.name == "tgbroadcast.server.guards"]
    assert len(warnings) == 1  # once, not once per failure
    # The first block ends: its room goes to the next new address.
    clock.advance(AUTH_BLOCK - 3.0)
    assert throttle.blocked(address(0)) == 0.0
    block(throttle, "192.0.2.9")
    assert throttle.blocked(address(1)) > 0
    assert throttle.blocked(address(2)) > 0


def test_the_throttle_remembers_at_least_one_address() -> None:
    with pytest.raises(ValueError, match="max_addresses"):
        AuthFailureThrottle(max_addresses=0)


def test_default_guards_stand_aside() -> None:
    guards = Guards()
    assert guards.network.allows("203.0.113.1")
    assert guards.limiter.acquire("any") == 0.0
    created = Guards.create(
        allowed_networks=networks("127.0.0.0/8"), requests_per_second=2, clock=FakeClock()
    )
    assert not created.network.allows("10.0.0.1")
    assert created.limiter.rate == 2


TOKENS = TokenCheck([("alice", "alice-token")])
ALICE = "Bearer alice-token"


def test_admit_answers_the_caller_of_a_right_token() -> None:
    guards = Guards.create(requests_per_second=1, clock=FakeClock())
    assert guards.admit(TOKENS, "192.0.2.1", ALICE, public=False) == Caller("alice", "192.0.2.1")
    assert guards.admit(TOKENS, "192.0.2.1", None, public=True) is None


def test_admit_checks_the_allow_list_before_anything_else() -> None:
    guards = Guards.create(allowed_networks=networks("10.0.0.0/8"), clock=FakeClock())
    for _ in range(AUTH_FAILURES * 2):
        refusal = guards.admit(TOKENS, "192.0.2.1", "Bearer wrong", public=False)
        assert refusal == Refusal(
            RefusalKind.FORBIDDEN, "client address 192.0.2.1 is not in server.allowed_networks"
        )
    assert guards.admit(TOKENS, "192.0.2.1", None, public=True) == refusal
    assert len(guards.auth_failures) == 0  # never reached authentication
    assert guards.admit(TOKENS, "10.1.1.1", ALICE, public=False) == Caller("alice", "10.1.1.1")


def test_admit_blocks_an_address_after_its_failures_right_token_or_not() -> None:
    guards = Guards.create(clock=FakeClock())
    for _ in range(AUTH_FAILURES):
        refusal = guards.admit(TOKENS, "192.0.2.1", "Bearer wrong", public=False)
        assert isinstance(refusal, Refusal)
        assert refusal.kind is RefusalKind.UNAUTHENTICATED
        assert "alice-token" not in refusal.detail
    blocked = guards.admit(TOKENS, "192.0.2.1", ALICE, public=False)
    assert blocked == Refusal(RefusalKind.TOO_MANY, BLOCKED, AUTH_BLOCK)
    assert guards.admit(TOKENS, "192.0.2.1", None, public=True) is None  # public stays open
    assert guards.admit(TOKENS, "192.0.2.2", ALICE, public=False) == Caller("alice", "192.0.2.2")


def test_admit_limits_a_token_after_authentication_and_says_who_it_was() -> None:
    guards = Guards.create(requests_per_second=0.5, clock=FakeClock())
    assert isinstance(guards.admit(TOKENS, "192.0.2.1", ALICE, public=False), Caller)
    refusal = guards.admit(TOKENS, "192.0.2.1", ALICE, public=False)
    assert isinstance(refusal, Refusal)
    assert refusal.kind is RefusalKind.TOO_MANY
    assert refusal.retry_after == pytest.approx(2.0)
    assert refusal.detail.startswith("more than server.requests_per_second (0.5)")
    assert refusal.caller == Caller("alice", "192.0.2.1")
    # A wrong token draws nothing from the bucket and is no rate refusal.
    wrong = guards.admit(TOKENS, "192.0.2.1", "Bearer wrong", public=False)
    assert isinstance(wrong, Refusal)
    assert wrong.kind is RefusalKind.UNAUTHENTICATED
