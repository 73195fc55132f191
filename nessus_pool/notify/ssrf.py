"""Which webhook URLs and addresses nessus-pool may call (no SSRF through a config URL).

A target is ``https``, or a loopback address, unless its ``allow-hosts`` lists the host.
The address is checked twice: the URL at load, and every address its host resolves to at
delivery (a public name that resolves to 10.0.0.5 or 169.254.169.254 is refused), on the
connection actually made, so DNS rebinding between a check and the connect cannot slip
through. Pure: ``ipaddress`` and ``urllib`` only (``config`` imports it).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import msgspec

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AllowList(msgspec.Struct, frozen=True):
    """A target's ``allow-hosts``: host names (exact, case-insensitive) and addresses or
    networks (``10.0.0.0/8``)."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def allows_address(self, addr: IPAddress) -> bool:
        return any(addr in net for net in self.networks if net.version == addr.version)


def parse_allow_hosts(entries: list[str]) -> AllowList:
    """Raises ValueError naming the entry that is neither a host name nor an address."""
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        text = entry.strip().lower().rstrip(".")
        if not text:
            raise ValueError("an empty entry")
        try:
            networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if not all(_LABEL.fullmatch(part) for part in text.split(".")):
            raise ValueError(f"{entry!r} is not a host name, address or network")
        names.add(text)
    return AllowList(frozenset(names), tuple(networks))


def _literal(host: str) -> IPAddress | None:
    try:
        return normalize(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def normalize(addr: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) as the IPv4 address it is."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def address_allowed(addr: IPAddress, allow: AllowList) -> bool:
    """Loopback and public unicast addresses, and those ``allow`` lists; never private,
    link-local (cloud metadata), multicast, reserved or unspecified ones otherwise."""
    addr = normalize(addr)
    if allow.allows_address(addr):
        return True
    if addr.is_loopback:
        return True
    return addr.is_global and not addr.is_multicast


def url_problem(url: str, allow: AllowList) -> str | None:
    """Why ``url`` may not be a webhook target, or None. At load time: what the text says
    (scheme, credentials, a literal address); names are resolved at delivery."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    del port  # parsed only to refuse a bad port early
    if parts.scheme not in ("https", "http"):
        return "use an https:// URL (or http:// to a loopback address)"
    host = parts.hostname
    if not host:
        return "the URL names no host"
    if parts.username is not None or parts.password is not None:
        return "the URL holds credentials: sign with the secret instead"
    if allow.allows_name(host):
        return None
    literal = _literal(host)
    if literal is not None and allow.allows_address(literal):
        return None
    loopback = host.lower() == "localhost" or (literal is not None and literal.is_loopback)
    if parts.scheme == "http" and not loopback:
        return (
            f"http:// is allowed to loopback addresses only; use https:// or list {host!r} "
            "in allow-hosts"
        )
    if literal is not None and not address_allowed(literal, allow):
        return f"{host} is not a public or loopback address; list it in allow-hosts to allow it"
    return None


def host_of(url: str) -> str:
    """The host a (checked) URL names, lower case, without brackets."""
    return (urlsplit(url).hostname or "").lower()
