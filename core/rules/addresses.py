"""Which addresses a ``callback_url`` may reach: the public internet only, unless
``webhook.allow_private_networks`` is set.

A webhook is POSTed from the API server's network, so a ``callback_url`` naming an internal
address would let any API token holder reach services that trust that network (server-side
request forgery). Two checks share these rules: at request time a host *spelled* as an
address (:func:`literal_address`, in every spelling a resolver would accept), and at delivery
time every address a host name resolves to (:func:`refusal`).

Refused IPv4 ranges (:data:`IPV4_REFUSED`): ``0.0.0.0/8`` (unspecified, "this network"),
``10.0.0.0/8``, ``172.16.0.0/12``, ``192.168.0.0/16`` (private), ``100.64.0.0/10`` (CGNAT),
``127.0.0.0/8`` (loopback), ``169.254.0.0/16`` (link-local, cloud metadata),
``192.0.0.0/24`` (IETF protocol assignments), ``192.0.2.0/24``, ``198.51.100.0/24``,
``203.0.113.0/24`` (documentation), ``192.88.99.0/24`` (6to4 relay), ``198.18.0.0/15``
(benchmarking), ``224.0.0.0/4`` (multicast), ``240.0.0.0/4`` (reserved, with the broadcast
address).

IPv6: an address with a zone id (``fe80::1%eth0``) names a local interface and is refused.
Addresses that carry an IPv4 address are judged by that address: IPv4-mapped
(``::ffff:0:0/96``), NAT64 (``64:ff9b::/96``) and 6to4 (``2002::/16``). Outside global
unicast (``2000::/3``) everything is refused — among others ``::/128`` (unspecified),
``::1/128`` (loopback), ``::/96`` (deprecated IPv4-compatible), ``64:ff9b:1::/48`` (local
NAT64), ``100::/64`` (discard), ``fc00::/7`` (unique local), ``fe80::/10`` (link-local),
``fec0::/10`` (site-local), ``ff00::/8`` (multicast); inside it ``2001::/23`` (IETF protocol
assignments, Teredo included), ``2001:db8::/32`` and ``3fff::/20`` (documentation)
(:data:`IPV6_REFUSED`).

On top of these tables, anything Python's :mod:`ipaddress` registry calls private, loopback,
link-local, multicast, unspecified, reserved or not global is refused too, so the tables are
a floor, never a hole.

May import: nothing of the project. No I/O.
"""

from __future__ import annotations

import re
import unicodedata
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final
from urllib.parse import unquote

Address = IPv4Address | IPv6Address

SETTING: Final = "webhook.allow_private_networks / TGB_WEBHOOK_ALLOW_PRIVATE_NETWORKS"
"""The setting that lifts the refusal, as error messages name it."""


IPV4_REFUSED: Final = tuple(
    (IPv4Network(network), kind)
    for network, kind in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)
"""IPv4 networks a webhook never reaches, with what they are."""

IPV6_REFUSED: Final = tuple(
    (IPv6Network(network), kind)
    for network, kind in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "deprecated IPv4-compatible"),
        ("::ffff:0:0:0/96", "IPv4-translated"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "reserved"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "unique local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "deprecated site-local"),
        ("ff00::/8", "multicast"),
    )
)
"""IPv6 networks a webhook never reaches (besides everything outside ``2000::/3``)."""

_GLOBAL_UNICAST: Final = IPv6Network("2000::/3")
_NAT64: Final = IPv6Network("64:ff9b::/96")

_IPV4_PART: Final = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
"""One part of an IPv4 address as ``inet_aton`` reads it: hex, octal (a leading 0) or
decimal."""
_PART_LIMITS: Final = {
    1: (2**32,),
    2: (2**8, 2**24),
    3: (2**8, 2**8, 2**16),
    4: (2**8, 2**8, 2**8, 2**8),
}
"""Bounds of each part by the number of parts: the last part fills the remaining bytes."""
_DOTS: Final = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
"""Full stops that IDNA reads as label separators, as a URL library maps them."""


def literal_address(host: str) -> Address | None:
    """The address a URL's host spells, or None when it is a name to resolve.

    ``host`` is a URL's host without brackets (``urlsplit(url).hostname``). Every spelling a
    URL library or the C resolver turns into an address counts: percent-encoded, full-width
    (IDNA-mapped) characters, one trailing dot, IPv4 as ``inet_aton`` reads it (decimal
    ``2130706433``, octal ``0177.0.0.1``, hex ``0x7f.0.0.1`` / ``0x7f000001``, short
    ``127.1``), IPv6 with or without a zone id (kept in ``scope_id``).
    """
    text = unicodedata.normalize("NFKC", unquote(host)).translate(_DOTS).lower()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    if ":" in text:
        try:
            return IPv6Address(text)
        except ValueError:
            return None
    return _inet_aton(text)


def _inet_aton(text: str) -> IPv4Address | None:
    """``text`` read as the C library's ``inet_aton`` reads it (no trailing garbage), or
    None."""
    parts = text.split(".")
    limits = _PART_LIMITS.get(len(parts))
    if limits is None or not all(_IPV4_PART.fullmatch(part) for part in parts):
        return None
    value = 0
    for part, limit in zip(parts, limits, strict=True):
        number = (
            int(part, 16) if part[:2] in ("0x", "0X") else int(part, 8 if part[0] == "0" else 10)
        )
        if number >= limit:
            return None
        value = value * limit + number
    return IPv4Address(value)


def refusal(address: Address) -> str | None:
    """Why a webhook may not reach ``address`` (``"loopback (127.0.0.0/8)"``), or None when
    it is a public address."""
    if isinstance(address, IPv6Address):
        return _ipv6_refusal(address)
    return _ipv4_refusal(address)


def _ipv4_refusal(address: IPv4Address) -> str | None:
    for network, kind in IPV4_REFUSED:
        if address in network:
            return f"{kind} ({network})"
    return _registry_refusal(address)


def _ipv6_refusal(address: IPv6Address) -> str | None:
    if address.scope_id:
        return "an IPv6 address with a zone id (a local interface)"
    embedded, how = _embedded_ipv4(address)
    if embedded is not None:
        inner = _ipv4_refusal(embedded)
        return None if inner is None else f"{how} {embedded}: {inner}"
    for network, kind in IPV6_REFUSED:
        if address in network:
            return f"{kind} ({network})"
    if address not in _GLOBAL_UNICAST:
        return f"not global unicast (outside {_GLOBAL_UNICAST})"
    return _registry_refusal(address)


def _embedded_ipv4(address: IPv6Address) -> tuple[IPv4Address | None, str]:
    """The IPv4 address a connection to ``address`` reaches in the end, if it carries one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF), "NAT64 of"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4 of"
    return None, ""


def _registry_refusal(address: Address) -> str | None:
    """What :mod:`ipaddress` knows beyond the tables (it grows with Python's registry)."""
    for name in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    if not address.is_global:
        return "not global"
    return None


def host_refusal(host: str, *, allow_private: bool) -> str | None:
    """Why a URL whose host is ``host`` may not be a webhook's target, judged without
    resolving anything (a name is checked at delivery), or None."""
    if allow_private:
        return None
    address = literal_address(host)
    if address is None:
        return None
    why = refusal(address)
    if why is None:
        return None
    shown = IPv6Address(int(address)) if isinstance(address, IPv6Address) else address
    return f"{shown} is {why}"  # without a zone id: never echo more than an address
