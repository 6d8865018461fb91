"""The client address of a request: its TCP peer, or, when the peer is a trusted proxy (THREADLINE_TRUSTED_PROXIES),
the address the proxies say they received the request from.

One place derives it: the app rewrites the ASGI scope's `client` once, as a request or socket arrives
(app.ThreadlineApp), so everything that reads `request.client` (the anonymous windows, shared links' per-address
windows, WebSockets for their whole life, uvicorn's access log) sees the same address. uvicorn's own proxy-header
handling is off (cli.py and serving.py pass proxy_headers=False): by default it trusted X-Forwarded-For from
127.0.0.1 and ::1, so any process on the host, or any client of a local proxy that passes the header through,
chose its own address.

Behind trusted proxies the client is the rightmost hop of X-Forwarded-For (or of RFC 7239 `Forwarded`'s `for=`)
that is not itself a trusted proxy: each proxy appends the address it received the request from, so the hops
right of the client were written by proxies that are trusted, and everything left of it was sent by the client and
is ignored. The peer stays the client (the proxy's address, as without the setting) when there is no such header,
when a hop that must be read is not an IP address (`unknown`, an obfuscated name, garbage), when every hop is a
trusted proxy, or when both headers are sent and name different clients (a proxy that writes one header passes
the other through from the client: neither can be preferred).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Hops read from the right of a header at most (a longer chain of trusted proxies falls back to the peer).
HOPS_MAX = 32


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses (`10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`); ValueError naming a bad one. An
    IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`, as a dual-stack listener shows IPv4 peers) is the IPv4 network
    it maps: addresses are compared as IPv4 (`parse_address`), so it would match nothing."""
    networks: list[Network] = []
    for value in values:
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(
                f"THREADLINE_TRUSTED_PROXIES must list CIDRs or IP addresses; got {value!r}"
            ) from exc
        mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
        if mapped is not None and network.prefixlen >= 96:
            network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
        networks.append(network)
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An IP address from a forwarded hop (`192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`,
    quoted or not); None for anything else. An IPv4-mapped IPv6 address is its IPv4 address."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end > 0 else "-"
        if rest and not (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit()):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not (port.isascii() and port.isdigit()):
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_hops(value: str) -> list[str] | None:
    """The `for=` value of each element of a `Forwarded` header (RFC 7239), left to right; None if an element has
    none (a quoted value holding `,` or `;` splits wrongly and is then refused as not an address)."""
    hops = []
    for element in value.rsplit(",", HOPS_MAX)[-HOPS_MAX:]:
        found = None
        for pair in element.split(";"):
            name, sep, given = pair.partition("=")
            if sep and name.strip().lower() == "for":
                found = given
        if found is None:
            return None
        hops.append(found)
    return hops


class TrustedProxies:
    """THREADLINE_TRUSTED_PROXIES, applied to an ASGI scope."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = parse_networks(networks)
        self._peer_trusted = functools.lru_cache(maxsize=1024)(self._trusted_host)

    def trusts(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def _trusted_host(self, host: str) -> bool:
        address = parse_address(host)
        return address is not None and self.trusts(address)

    def _client(self, hops: list[str] | None) -> str | None:
        """The rightmost hop that is not a trusted proxy; None: fall back to the peer."""
        if hops is None:
            return None
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                return None
            if not self.trusts(address):
                return str(address)
        return None  # every hop is a trusted proxy: the request came from one

    def client(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The client address behind `peer`, from the request's raw headers; None: the peer is the client."""
        if not peer or not self._peer_trusted(peer):
            return None
        forwarded_for: list[str] = []
        forwarded: list[str] = []
        for name, value in headers:
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"forwarded":
                forwarded.append(value.decode("latin-1"))
        found = []
        if forwarded_for:
            found.append(self._client(",".join(forwarded_for).rsplit(",", HOPS_MAX)[-HOPS_MAX:]))
        if forwarded:
            found.append(self._client(_forwarded_hops(",".join(forwarded))))
        if not found or found[0] is None or any(other != found[0] for other in found):
            return None
        return found[0]

    def apply(self, scope: Any) -> None:
        """Sets `scope["client"]` to the client behind a trusted proxy (in place, as uvicorn's own proxy handling
        did, so its access log shows the client too)."""
        peer = scope.get("client")
        if not peer:
            return
        client = self.client(peer[0], scope.get("headers") or ())
        if client is not None:
            scope["client"] = (client, 0)


def counted(request: Any) -> str:
    """The address a request is counted by in per-address windows (anonymous operations, shared links' reads):
    `request.client` (the peer, or behind trusted proxies the client they forward: see above), an IPv6 client by
    its /64: one host holds a whole /64, so counting single addresses would give it a window per address."""
    client = getattr(request, "client", None)
    host = str(getattr(client, "host", None) or "unknown")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return host
