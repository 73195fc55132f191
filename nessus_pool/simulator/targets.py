"""Expansion of Nessus ``text_targets`` into the hosts a scan reports on."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator

_SPLIT = re.compile(r"[\s,]+")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$"
)


class TargetError(ValueError):
    """A target that Nessus would refuse."""


def split_targets(text: str) -> list[str]:
    return [t for t in _SPLIT.split(text.strip()) if t]


def expand_targets(text: str, *, limit: int) -> list[str]:
    """Expand IPv4/IPv6 addresses, CIDRs (``10.0.0.0/30``), ranges (``10.0.0.1-10.0.0.5`` or
    ``10.0.0.1-5``) and hostnames, in order, without duplicates, stopping at ``limit`` hosts.
    Raises :class:`TargetError` for a malformed target."""
    hosts: list[str] = []
    seen: set[str] = set()
    for target in split_targets(text):
        for host in _expand_one(target):
            if len(hosts) >= limit:
                return hosts
            if host not in seen:
                seen.add(host)
                hosts.append(host)
    return hosts


def _expand_one(target: str) -> Iterable[str]:
    if "/" in target:
        try:
            net = ipaddress.ip_network(target, strict=False)
        except ValueError as exc:
            raise TargetError(f"invalid target {target!r}") from exc
        if net.num_addresses <= 2:
            return _addresses(net.network_address, int(net.num_addresses))
        # Nessus skips the network and broadcast addresses of a CIDR
        return _addresses(net.network_address + 1, int(net.num_addresses) - 2)
    if "-" in target and target[0].isdigit() and target.count(".") >= 3:
        start_s, _, end_s = target.partition("-")
        try:
            start = ipaddress.IPv4Address(start_s)
            if "." in end_s:
                end = ipaddress.IPv4Address(end_s)
            else:
                end = ipaddress.IPv4Address(f"{start_s.rsplit('.', 1)[0]}.{int(end_s)}")
        except ValueError as exc:
            raise TargetError(f"invalid range {target!r}") from exc
        if end < start:
            raise TargetError(f"invalid range {target!r}")
        return _addresses(start, int(end) - int(start) + 1)
    try:
        return [str(ipaddress.ip_address(target))]
    except ValueError:
        pass
    if not _HOSTNAME.match(target) or target.replace(".", "").isdigit():
        raise TargetError(f"invalid target {target!r}")
    return [target.lower().rstrip(".")]


def _addresses(first: ipaddress.IPv4Address | ipaddress.IPv6Address, count: int) -> Iterator[str]:
    """Consecutive addresses, generated on demand so that a /8 costs nothing past ``limit``."""
    for offset in range(count):
        yield str(first + offset)
