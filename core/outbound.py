"""Outbound HTTP to addresses users name: only where ``webhook.allow_private_networks`` allows.

A completion webhook (``callback_url``) and a media file the service fetches for Telegram
(``media_url``) are requests to addresses an API token holder chose. :class:`CheckedResolver`
is the aiohttp resolver both use: it checks every address a host resolves to, and a host
spelled as an address, against :func:`tgbroadcast.core.rules.addresses.refusal` (or
:func:`allow_all` when private networks are allowed), so a connection only goes to an
address that was checked.

May import: :mod:`tgbroadcast.core.rules`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from ipaddress import ip_address

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from tgbroadcast.core.rules import addresses
from tgbroadcast.core.rules.addresses import Address


class RefusedDestination(Exception):
    """A URL's host is, or resolves to, an address it may not reach (a permanent failure:
    the same URL is refused every time)."""


Refusal = Callable[[Address], str | None]
"""Why a request may not reach an address, or None (:func:`addresses.refusal`)."""


def allow_all(address: Address) -> str | None:
    """The refusal of a deployment that allows private networks: none."""
    return None


class CheckedResolver(AbstractResolver):
    """An aiohttp resolver that resolves a host once per connection, checks every address
    it got and returns them only when none is refused, so the connection goes to an address
    that was checked. A host spelled as an address (``0x7f.1``) is checked, not resolved."""

    def __init__(self, *, refusal: Refusal, resolver: AbstractResolver | None = None) -> None:
        self._refusal = refusal
        self._owned = resolver is None
        self._resolver = resolver  # the system's, made on first use (it needs a loop)

    def check_literal(self, host: str) -> Address | None:
        """The address ``host`` spells, checked (a refused one raises
        :class:`RefusedDestination`), or None for a name. aiohttp connects to a host spelled
        as an address without asking the resolver, so this is called before each request."""
        address = addresses.literal_address(host)
        if address is not None:
            self._check(address, "" if str(address) == host else f"{host} spells")
        return address

    def _check(self, address: Address, how: str) -> None:
        """Refuse ``address``; ``how`` says where it came from (``"x resolves to"``)."""
        why = self._refusal(address)
        if why is not None:
            said = f"{how} {address}, which" if how else str(address)
            raise RefusedDestination(f"{said} is {why}")

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Every address of ``host``, each checked; one refused refuses them all."""
        literal = self.check_literal(host)
        if literal is not None:
            return [_result(host, literal, port)]
        if self._resolver is None:
            self._resolver = aiohttp.ThreadedResolver()
        resolved = await self._resolver.resolve(host, port, family)
        for result in resolved:
            try:
                address = ip_address(result["host"])
            except ValueError:
                raise RefusedDestination(f"{host} resolved to a non-address") from None
            self._check(address, f"{host} resolves to")
        return resolved

    async def close(self) -> None:
        if self._owned and self._resolver is not None:
            await self._resolver.close()


def _result(host: str, address: Address, port: int) -> ResolveResult:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return {
        "hostname": host,
        "host": str(address),
        "port": port,
        "family": family,
        "proto": 0,
        "flags": 0,
    }
