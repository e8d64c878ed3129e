"""SSRF guard: which addresses a URL from a manifest may make us connect to.

The check runs where the connection is made, not before it: aiohttp connects only to the
addresses our resolver returns, so a DNS answer cannot change between check and connect, and
every redirect hop is resolved the same way. IP literals skip DNS, so they are checked
directly before any request. aiohttp's resolver interface is the one place to do this; no
library offers it ready-made for aiohttp.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

__all__ = [
    "METADATA_ADDRESSES", "ForbiddenAddressError", "GuardedResolver", "check_literal",
    "find_forbidden", "refusal_reason",
]

# Instance-metadata endpoints stay refused even with --allow-private-networks: nothing in an
# image manifest has a reason to point at the credentials of the machine that reads it.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254",
))


class ForbiddenAddressError(OSError):
    """A URL resolved to an address the guard refuses; no connection was attempted."""


def refusal_reason(address: str, allow_private: bool) -> str | None:
    """Why connecting to `address` is refused, or None when it is allowed."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud instance-metadata address"
    if allow_private:
        return None
    for test, what in ((ip.is_loopback, "loopback"), (ip.is_link_local, "link-local"),
                       (ip.is_multicast, "multicast"), (ip.is_unspecified, "unspecified"),
                       (ip.is_private, "private"), (ip.is_reserved, "reserved")):
        if test:
            return f"{ip} is a {what} address (use --allow-private-networks to allow it)"
    if not ip.is_global:
        return f"{ip} is not a public address (use --allow-private-networks to allow it)"
    return None


def check_literal(host: str, allow_private: bool) -> None:
    """Raises ForbiddenAddressError for a URL host that is a refused IP literal."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    reason = refusal_reason(bare, allow_private)
    if reason:
        raise ForbiddenAddressError(reason)


class GuardedResolver(AbstractResolver):
    """Resolves with getaddrinfo, then keeps only addresses the guard allows."""

    def __init__(self, allow_private: bool, base: AbstractResolver | None = None):
        self._allow_private = allow_private
        self._base = base or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._base.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        reasons: list[str] = []
        for r in results:
            reason = refusal_reason(r["host"], self._allow_private)
            if reason:
                reasons.append(reason)
            else:
                allowed.append(r)
        if not allowed:
            raise ForbiddenAddressError(
                f"{host} resolves only to refused addresses: {'; '.join(reasons)}")
        return allowed

    async def close(self) -> None:
        await self._base.close()


def find_forbidden(exc: BaseException) -> ForbiddenAddressError | None:
    """The guard's refusal inside an aiohttp exception chain, if that is what it was."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ForbiddenAddressError):
            return e
        stack += [getattr(e, "os_error", None), e.__cause__, e.__context__]
    return None
