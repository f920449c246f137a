"""Which hosts image downloads may reach, and the addresses a download connects to.

A gateway names the image links; a hostile one could name ``http://10.0.0.5/admin`` or a hostname
resolving into the user's network (SSRF). So a link whose host is, or resolves to, a non-public
address (private, loopback, link-local, CGNAT, reserved, multicast) is refused as ``forbidden_host``
before any connection, unless

- the gateway is itself on such an address (the mock server on loopback, a gateway on the LAN: its
  images come from there too), or
- ``limits.download_hosts`` names the host (the user said so; it then admits only listed hosts).

Link-local addresses (cloud metadata at 169.254.169.254) are refused even beside a private gateway.

The check resolves a hostname once; the addresses it checked are *pinned*: the run's aiohttp client
connects through :class:`PinnedResolver`, which answers a checked host with exactly those addresses,
so a DNS server cannot answer "public" to the check and "private" to the connection (rebinding).
Other clients (plain httpx) resolve again when they connect: see docs/security.md.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import anyio
import httpx

from wanbatch.errors import RefusedError


def network_errors() -> tuple[type[BaseException], ...]:
    """What a request or a download raises on the network: httpx's errors, OSError, and aiohttp's
    ClientError, which httpx_aiohttp lets through unmapped. aiohttp's count once it is loaded: the
    gateway client loads it, and without it none can arise (the mock's in-process transport), so
    `plan` and mock runs start without importing it (a third of a second)."""
    aiohttp = sys.modules.get("aiohttp")
    return (httpx.HTTPError, OSError) if aiohttp is None else (httpx.HTTPError, OSError, aiohttp.ClientError)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``getaddrinfo``-shaped lookup (``anyio.getaddrinfo`` by default; tests pass their own "DNS").
Lookup = Callable[[str, int | None], Awaitable[Sequence[tuple[Any, ...]]]]

_TTL = 60.0
_PINS: dict[str, tuple[float, tuple[Address, ...]]] = {}  # host → (when checked, addresses checked)


class HostLimits(Protocol):
    """What the check needs of :class:`wanbatch.fetch.DownloadLimits`."""

    @property
    def hosts(self) -> tuple[str, ...] | None: ...

    @property
    def gateway(self) -> str | None: ...


def allow_list(download_hosts: Sequence[str] | None) -> tuple[str, ...] | None:
    """``limits.download_hosts`` as the check compares them (lower case, no brackets or final dot)."""
    if download_hosts is None:
        return None
    return tuple(h.lower().strip("[]").rstrip(".") for h in download_hosts)


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.split("%")[0].strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_kind(address: Address) -> str | None:
    """Why ``address`` is not a public one (``"link-local"``, ``"private"``, …), or None when it is."""
    if address.is_link_local:
        return "link-local"
    if address.is_loopback:
        return "loopback"
    if address.is_multicast or address.is_unspecified or address.is_reserved:  # 0.0.0.0 is this host
        return "reserved"
    if address.is_private or not address.is_global:  # 10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10
        return "private"
    return None


async def _lookup(host: str, lookup: Lookup | None) -> tuple[Address, ...] | None:
    """The addresses of ``host``; None when it does not resolve."""
    try:
        infos = await (lookup or anyio.getaddrinfo)(host, None)
    except OSError:
        return None
    return tuple(dict.fromkeys(a for info in infos if (a := _address(str(info[4][0]))) is not None))


async def resolve(host: str, lookup: Lookup | None = None, *,
                  pin_unresolved: bool = True) -> tuple[Address, ...]:
    """The addresses of ``host`` (an IP literal is its own), pinned for connections; () if unresolvable.

    One lookup a minute per host; the pin is replaced by the next lookup, never dropped while used.
    An unresolvable host is pinned as such (so the connection cannot find it private later), unless
    ``pin_unresolved`` is False (the gateway's own host: a DNS hiccup must not cut the gateway off).
    """
    literal = _address(host)
    if literal is not None:
        return (literal,)
    seen = _PINS.get(host)
    if lookup is None and seen is not None and time.monotonic() - seen[0] < _TTL:
        return seen[1]
    found = await _lookup(host, lookup)
    if found is None and not pin_unresolved:
        return ()
    if len(_PINS) > 4096:
        _PINS.clear()
    _PINS[host] = (time.monotonic(), found or ())
    return found or ()


def pinned(host: str) -> tuple[Address, ...] | None:
    """The addresses a check saw for ``host`` (None: never checked, e.g. the gateway's own host)."""
    seen = _PINS.get(host.lower().rstrip("."))
    return None if seen is None else seen[1]


def _host(url: str | None) -> str | None:
    try:
        return httpx.URL(url).host.lower().rstrip(".") if url else None
    except (httpx.InvalidURL, TypeError, ValueError):
        return None


_GATEWAYS: dict[str, tuple[float, bool]] = {}


async def gateway_is_private(gateway_url: str | None, lookup: Lookup | None = None) -> bool:
    """Whether the gateway is on a non-public address itself (so its images may be too); not pinned."""
    host = _host(gateway_url)
    if not host:
        return False
    seen = _GATEWAYS.get(host)
    if lookup is None and seen is not None and time.monotonic() - seen[0] < _TTL:
        return seen[1]
    literal = _address(host)
    addresses = (literal,) if literal is not None else (await _lookup(host, lookup) or ())
    private = any(address_kind(a) not in (None, "link-local") for a in addresses)
    _GATEWAYS[host] = (time.monotonic(), private)
    return private


async def check_download_host(url: str, limits: HostLimits, *, lookup: Lookup | None = None) -> None:
    """Refuse (``forbidden_host``, or ``bad_image`` for a link that is not http(s)) before connecting.

    ``limits.hosts`` (``limits.download_hosts``): only those hosts and their subdomains, whatever their
    address. Otherwise no link-local address ever, and no other non-public one unless the gateway
    (``limits.gateway``) is on one too; ``limits.gateway`` None (a download outside a run) skips that
    second rule. Every host checked is pinned (see :class:`PinnedResolver`).
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise RefusedError("the image link is not a valid URL", kind="bad_image") from None
    if parsed.scheme not in ("http", "https"):
        raise RefusedError(f"the image link is not http(s) ({parsed.scheme or 'no scheme'}); not fetched",
                           kind="bad_image")
    host = parsed.host.lower().rstrip(".")
    wire = parsed.raw_host.decode("ascii").lower().rstrip(".")  # IDNA-encoded: what aiohttp resolves
    allowed = limits.hosts
    if allowed is not None:
        if any(host == a or host.endswith("." + a) for a in allowed):
            await resolve(wire, lookup)  # pinned: the connection goes where this check looked
            return
        raise RefusedError(f"the image host {host} is not in limits.download_hosts", kind="forbidden_host")
    addresses = await resolve(wire, lookup, pin_unresolved=host != _host(limits.gateway))
    kinds = {a: k for a in addresses if (k := address_kind(a)) is not None}
    if not kinds:
        return
    address, kind = next(iter(kinds.items()))
    named = host if str(address) == host else f"{host} ({address})"
    if kind == "link-local":
        raise RefusedError(f"the image host {named} is a link-local address (cloud metadata lives "
                           "there); not fetched", kind="forbidden_host")
    if limits.gateway is not None and not await gateway_is_private(limits.gateway, lookup):
        raise RefusedError(f"the image host {named} is a {kind} address and the gateway is not; not "
                           "fetched (a hostile gateway could reach into your network). If you trust it, "
                           "list the host in limits.download_hosts", kind="forbidden_host")


def _results(host: str, port: int, family: int, addresses: Sequence[Address]) -> list[dict[str, Any]]:
    out = []
    for address in addresses:
        fam = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        if family in (0, socket.AF_UNSPEC, fam):
            out.append({"hostname": host, "host": str(address), "port": port, "family": fam,
                        "proto": 0, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV})
    return out


def pinned_resolver() -> Any:
    """An aiohttp resolver that answers a checked host with the addresses checked (see the module doc);
    other hosts (the gateway, a proxy) are resolved as usual. Call inside the event loop."""
    from aiohttp.abc import AbstractResolver
    from aiohttp.resolver import DefaultResolver

    class PinnedResolver(AbstractResolver):
        def __init__(self) -> None:
            self.fallback = DefaultResolver()

        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_INET) -> Any:
            addresses = pinned(host)
            if addresses is None:
                return await self.fallback.resolve(host, port, family)
            results = _results(host, port, family, addresses)
            if not results:
                raise OSError(f"{host} did not resolve when its link was checked")
            return results

        async def close(self) -> None:
            await self.fallback.close()

    return PinnedResolver()
