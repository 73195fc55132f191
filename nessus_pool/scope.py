"""Target scope: which targets a pool may scan. Pure, no I/O (callers resolve hostnames).

A pool's ``allowed-targets`` are CIDRs / addresses and hostname patterns (``*.corp.example``);
``denied-targets`` likewise and always win. A target is in scope when it lies wholly inside
one allowed network (or matches an allowed hostname pattern, or every address it resolves to
is allowed) and touches no denied network or pattern.
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


def parse_scope_entry(entry: str) -> Network | str:
    """A CIDR / address becomes a network; anything else is a lowercase hostname pattern."""
    e = entry.strip()
    try:
        return ipaddress.ip_network(e, strict=False)
    except ValueError:
        return e.lower().rstrip(".")


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
        return float(min(sizes, default=math.inf))

    def _denied_range(self, lo: Address, hi: Address) -> Network | None:
        for net in self.denied_nets:
            first, last = _span(net)
            if net.version == lo.version and not (int(hi) < first or int(lo) > last):
                return net
        return None

    def _allowed_range(self, lo: Address, hi: Address) -> bool:
        if not self.allowed:
            return not self.mandatory
        return any(_holds(net, lo, hi) for net in self.allowed_nets)

    def why_not(self, target: str, resolved: Mapping[str, list[str]] | None = None) -> str | None:
        """None if ``target`` is in scope, else the reason (naming the target)."""
        bounds = _bounds(target)
        if bounds is not None:
            lo, hi = bounds
            denied = self._denied_range(lo, hi)
            if denied is not None:
                return f"target {target} overlaps denied {denied}"
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
