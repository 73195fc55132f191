"""Target scope: which targets a pool may scan. Pure, no I/O (callers resolve hostnames).

A pool's ``allowed-targets`` are CIDRs / addresses and hostname patterns (``*.corp.example``);
``denied-targets`` likewise and always win. A target is in scope when it lies wholly inside
one allowed network (or matches an allowed hostname pattern, or every address it resolves to
is allowed) and touches no denied network or pattern.

IPv4 addresses can be written as IPv6 (``::ffff:10.0.0.1``, ``::10.0.0.1``,
``64:ff9b::10.0.0.1``, 6to4, Teredo): every scope decision looks through those forms, so a
deny list of IPv4 networks cannot be bypassed by spelling an address in IPv6. Forms whose
IPv4 address is not certain (the NAT64 local-use prefix ``64:ff9b:1::/48`` with its several
RFC 6052 layouts, 6to4, Teredo) count against every IPv4 address they could stand for, and
are allowed only by an IPv6 entry that holds them.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import math
from collections.abc import Mapping

from nessus_pool.errors import ScopeError
from nessus_pool.targets import _RANGE, _range_bounds

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


_V4_MASK = 0xFFFFFFFF
_V4_ALL = (ipaddress.IPv4Address(0), ipaddress.IPv4Address(_V4_MASK))
#: IPv6 /96 prefixes whose last 32 bits are one IPv4 address: IPv4-mapped,
#: IPv4-compatible (deprecated, still routed by some stacks) and the NAT64 well-known prefix
_EMBED_96 = tuple(ipaddress.IPv6Network(n) for n in ("::ffff:0:0/96", "::/96", "64:ff9b::/96"))
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


def _as_v4_net(net: Network) -> Network:
    """An IPv6 network inside one IPv4-embedding /96 is the IPv4 network it stands for."""
    if net.version == 6 and net.prefixlen >= 96:
        for region in _EMBED_96:
            if net.subnet_of(region):
                v4 = int(net.network_address) & _V4_MASK
                return ipaddress.IPv4Network((v4, net.prefixlen - 96))
    return net


def parse_scope_entry(entry: str) -> Network | str:
    """A CIDR / address becomes a network (IPv4 written as IPv6 becomes IPv4); anything
    else is a lowercase hostname pattern."""
    e = entry.strip()
    try:
        return _as_v4_net(ipaddress.ip_network(e, strict=False))
    except ValueError:
        return e.lower().rstrip(".")


def _nat64_local_candidates(x: int) -> list[int]:
    """The IPv4 addresses an address in 64:ff9b:1::/48 may embed, one per RFC 6052 prefix
    length that fits the /48 (48, 56, 64, 96); bits 64-71 are the reserved u octet."""
    return [
        ((x >> 64) & 0xFFFF) << 16 | (x >> 40) & 0xFFFF,
        ((x >> 64) & 0xFF) << 24 | (x >> 32) & 0xFFFFFF,
        (x >> 24) & _V4_MASK,
        x & _V4_MASK,
    ]


def _ambiguous_candidates(x: int) -> list[int]:
    """IPv4 addresses one IPv6 address may carry in a form that is not one /96."""
    a = ipaddress.IPv6Address(x)
    if a in _NAT64_LOCAL:
        return _nat64_local_candidates(x)
    if a.sixtofour is not None:
        return [int(a.sixtofour)]
    if a.teredo is not None:
        return [int(a.teredo[0]), int(a.teredo[1])]
    return []


def _v4_views(lo: Address, hi: Address) -> list[tuple[Address, Address]]:
    """Every IPv4 interval the interval lo..hi stands for (itself when it is IPv4)."""
    if lo.version == 4:
        return [(lo, hi)]
    first, last = int(lo), int(hi)
    views: list[tuple[Address, Address]] = []
    for region in _EMBED_96:
        a, b = max(first, _span(region)[0]), min(last, _span(region)[1])
        if a <= b:  # within one /96 the low 32 bits run from a to b without wrapping
            views.append((ipaddress.IPv4Address(a & _V4_MASK), ipaddress.IPv4Address(b & _V4_MASK)))
    for region in (_NAT64_LOCAL, _SIXTOFOUR, _TEREDO):
        a, b = max(first, _span(region)[0]), min(last, _span(region)[1])
        if a > b:
            continue
        if a != b:  # a range through such a prefix could reach any IPv4 address
            views.append(_V4_ALL)
            continue
        for v4 in _ambiguous_candidates(a):
            addr = ipaddress.IPv4Address(v4)
            views.append((addr, addr))
    return views


def _unique_v4_view(lo: Address, hi: Address) -> tuple[Address, Address] | None:
    """The one IPv4 interval lo..hi is, when it lies wholly inside one /96 embedding."""
    if lo.version == 4:
        return None
    for region in _EMBED_96:
        first, last = _span(region)
        if first <= int(lo) and int(hi) <= last:
            return (
                ipaddress.IPv4Address(int(lo) & _V4_MASK),
                ipaddress.IPv4Address(int(hi) & _V4_MASK),
            )
    return None


def _span(net: Network) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address)


def _holds(net: Network, lo: Address, hi: Address) -> bool:
    first, last = _span(net)
    return net.version == lo.version and first <= int(lo) and int(hi) <= last


def _bounds(target: str) -> tuple[Address, Address] | None:
    """The first and last address of an IP / CIDR / range target; None for hostnames."""
    if "/" in target:
        net = ipaddress.ip_network(target, strict=False)
        return net[0], net[-1]
    if _RANGE.match(target):
        return _range_bounds(target)
    try:
        a = ipaddress.ip_address(target)
    except ValueError:
        return None
    return a, a


def _as_v4_note(lo: Address, hi: Address) -> str:
    """`` (IPv4 10.66.1.1)`` for an IPv6 spelling of IPv4 addresses, else ``""``."""
    view = _unique_v4_view(lo, hi)
    if view is None:
        return ""
    return f" (IPv4 {view[0]})" if view[0] == view[1] else f" (IPv4 {view[0]}-{view[1]})"


class Scope:
    def __init__(self, allowed: list[str], denied: list[str], *, mandatory: bool) -> None:
        self.allowed = [parse_scope_entry(e) for e in allowed]
        self.denied = [parse_scope_entry(e) for e in denied]
        self.mandatory = mandatory
        self.allowed_nets = [e for e in self.allowed if not isinstance(e, str)]
        self.allowed_patterns = [e for e in self.allowed if isinstance(e, str)]
        self.denied_nets = [e for e in self.denied if not isinstance(e, str)]
        self.denied_patterns = [e for e in self.denied if isinstance(e, str)]

    @property
    def unrestricted(self) -> bool:
        return not self.allowed and not self.mandatory

    @property
    def open(self) -> bool:
        """Allows every target: nothing to check."""
        return self.unrestricted and not self.denied

    def breadth(self, targets: list[str], resolved: Mapping[str, list[str]] | None = None) -> float:
        """How narrowly this scope covers ``targets`` (in scope): the sizes of the smallest
        allowed networks holding each of them; a hostname pattern counts as one address.
        An unrestricted scope is infinitely broad."""
        if not self.allowed:
            return math.inf
        total = 0.0
        for t in targets:
            bounds = _bounds(t)
            if bounds is None:
                host = t.lower()
                if any(fnmatch.fnmatchcase(host, p) for p in self.allowed_patterns):
                    total += 1
                    continue
                addrs = [ipaddress.ip_address(a) for a in (resolved or {}).get(host, [])]
                total += sum(self._smallest(a, a) for a in addrs)
            else:
                total += self._smallest(*bounds)
        return total

    def _smallest(self, lo: Address, hi: Address) -> float:
        sizes = [net.num_addresses for net in self.allowed_nets if _holds(net, lo, hi)]
        view = _unique_v4_view(lo, hi)
        if view is not None:
            sizes += [net.num_addresses for net in self.allowed_nets if _holds(net, *view)]
        return float(min(sizes, default=math.inf))

    def _denied_range(self, lo: Address, hi: Address) -> Network | None:
        if not self.denied_nets:
            return None
        spans = [(lo, hi)] + ([] if lo.version == 4 else _v4_views(lo, hi))
        for net in self.denied_nets:
            first, last = _span(net)
            for a, b in spans:
                if net.version == a.version and not (int(b) < first or int(a) > last):
                    return net
        return None

    def _allowed_range(self, lo: Address, hi: Address) -> bool:
        if not self.allowed:
            return not self.mandatory
        if any(_holds(net, lo, hi) for net in self.allowed_nets):
            return True
        view = _unique_v4_view(lo, hi)
        return view is not None and any(_holds(net, *view) for net in self.allowed_nets)

    def why_not(self, target: str, resolved: Mapping[str, list[str]] | None = None) -> str | None:
        """None if ``target`` is in scope, else the reason (naming the target)."""
        bounds = _bounds(target)
        if bounds is not None:
            lo, hi = bounds
            denied = self._denied_range(lo, hi)
            if denied is not None:
                return f"target {target}{_as_v4_note(lo, hi)} overlaps denied {denied}"
            if not self._allowed_range(lo, hi):
                return f"target {target} is outside the pool's allowed targets" + (
                    "" if self.allowed else " (scope is mandatory and none is configured)"
                )
            return None
        host = target.lower()
        for pat in self.denied_patterns:
            if fnmatch.fnmatchcase(host, pat):
                return f"target {target} matches denied pattern {pat}"
        addrs = [ipaddress.ip_address(a) for a in (resolved or {}).get(host, [])]
        for a in addrs:
            net = self._denied_range(a, a)
            if net is not None:
                return f"target {target} resolves to {a}, inside denied {net}"
        if any(fnmatch.fnmatchcase(host, pat) for pat in self.allowed_patterns):
            return None
        if not self.allowed:
            return (
                None
                if not self.mandatory
                else (
                    f"target {target} is outside the pool's allowed targets (scope is mandatory "
                    "and none is configured)"
                )
            )
        if not addrs:
            return (
                f"target {target} matches no allowed hostname pattern and could not be "
                "resolved to check its addresses"
            )
        outside = [a for a in addrs if not self._allowed_range(a, a)]
        if outside:
            return f"target {target} resolves to {outside[0]}, outside the allowed targets"
        return None

    def check(self, targets: list[str], resolved: Mapping[str, list[str]] | None = None) -> None:
        for i, t in enumerate(targets):
            reason = self.why_not(t, resolved)
            if reason is not None:
                raise ScopeError(reason, field=f"targets[{i}]")

    def needs_resolution(self, targets: list[str]) -> list[str]:
        """Hostnames whose addresses matter to this scope."""
        if self.unrestricted and not self.denied_nets:
            return []
        return [t for t in targets if _bounds(t) is None]
