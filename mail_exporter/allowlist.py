"""Which targets /probe may reach: host name patterns and IP networks (``probe.allowed_targets``).

A pattern is either a network (``192.0.2.0/24``, ``2001:db8::/32``, or one address) or
a host name pattern in which ``*`` stands for any characters, dots included
(``*.example.com`` matches ``mx1.example.com`` and ``a.b.example.com``, not
``example.com``). Names compare without case and without a trailing dot.

A target written as an IP literal is matched against the networks only; a target
written as a host name is matched against the host patterns only, and is never
resolved to check it against the networks: the name would be looked up again when
the probe connects, and a DNS answer that changed in between (DNS rebinding) would
let anyone who controls a zone steer probes to any address. An IPv4-mapped IPv6
literal (``::ffff:192.0.2.1``) is matched as the IPv4 address it reaches.

A name pattern is matched by finding its literal parts in order, leftmost first, which
is exact for patterns whose only wildcard is ``*`` and takes time linear in the name.
A regular expression with one ``.*`` per star backtracks: ``*a*a*a*a*a*a*a*.example.com``
against a crafted 250-character name would hold the event loop for hours.

An empty list allows every target, except for modules that log in: /probe uses those
only on targets the list matches and on the targets scheduled with them (see
:func:`target_key` for when two addresses are the same target).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mail_exporter.targets import Address

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
TargetKey = tuple[str | IPAddress, int]

_NAME_PATTERN = re.compile(r"[a-z0-9_*](?:[a-z0-9_.*-]*[a-z0-9_*])?")
_ADDRESS_LIKE = re.compile(r"[0-9.*]*[0-9][0-9.*]*")


def _name(text: str) -> str:
    return text.lower().removesuffix(".")


def _ip_address(host: str) -> IPAddress | None:
    """The address an IP literal reaches (an IPv4-mapped one as IPv4), None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def target_key(address: Address) -> TargetKey:
    """What two addresses share when they are the same target: the port, and the host as
    a name without case or trailing dot, or as the IP address a literal reaches.

    A name is never its address: ``127.1`` or ``localhost`` is not ``127.0.0.1``, even
    though the resolver takes them there, so that no other spelling of a host passes for
    a scheduled target's."""
    host = _ip_address(address.host)
    return (host if host is not None else _name(address.host)), address.port


@dataclass(frozen=True)
class NamePattern:
    """A host name pattern split at its stars: ``*.example.com`` is ``("", ".example.com")``."""

    parts: tuple[str, ...]

    def matches(self, name: str) -> bool:
        """Whether ``name`` (lower case, no trailing dot) fits the pattern."""
        if len(self.parts) == 1:
            return name == self.parts[0]
        first, *middle, last = self.parts
        if len(name) < len(first) + len(last):
            return False
        if not (name.startswith(first) and name.endswith(last)):
            return False
        position, end = len(first), len(name) - len(last)
        for part in middle:  # leftmost first leaves the most room for the parts after
            found = name.find(part, position, end)
            if found < 0:
                return False
            position = found + len(part)
        return True


def parse_pattern(text: str) -> IPNetwork | NamePattern:
    """A network or a host name pattern; ``ValueError`` says what is wrong."""
    try:
        return ipaddress.ip_network(text)
    except ValueError as error:
        if "/" in text or ":" in text:
            raise ValueError(f"invalid network {text!r}: {error}") from None
    name = _name(text)
    if not _NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid allowed target {text!r}: use a host name pattern such as "
            "*.example.com or a network such as 192.0.2.0/24"
        )
    if "*" in name and _ADDRESS_LIKE.fullmatch(name):
        raise ValueError(
            f"{text!r} looks like an address pattern: write networks in CIDR form, "
            "such as 10.0.0.0/16"
        )
    return NamePattern(tuple(name.split("*")))


def checked_pattern(text: str) -> str:
    """The pattern itself, once it is known to parse (a config field validator)."""
    parse_pattern(text)
    return text


@dataclass(frozen=True)
class TargetAllowlist:
    """The compiled ``allowed_targets``: :meth:`matches` answers for one target host."""

    networks: tuple[IPNetwork, ...] = ()
    names: tuple[NamePattern, ...] = ()

    @classmethod
    def of(cls, patterns: Iterable[str]) -> TargetAllowlist:
        parsed = [parse_pattern(text) for text in patterns]
        return cls(
            networks=tuple(p for p in parsed if not isinstance(p, NamePattern)),
            names=tuple(p for p in parsed if isinstance(p, NamePattern)),
        )

    @property
    def empty(self) -> bool:
        return not self.networks and not self.names

    def matches(self, host: str) -> bool:
        """Whether one of the patterns covers a target's host (a name or an IP literal)."""
        address = _ip_address(host)
        if address is None:
            name = _name(host)
            return any(pattern.matches(name) for pattern in self.names)
        return any(address in network for network in self.networks)
