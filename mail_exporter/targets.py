"""Target addresses: ``host:port``, ``[v6]:port`` and bare IPv6 literals, parsed strictly."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from mail_exporter.decimal_text import ascii_int

_HOST_NAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


@dataclass(frozen=True)
class Address:
    """A host name or IP literal with a TCP port."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse ``HOST:PORT``; ``ValueError`` says what is wrong."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"invalid address {text!r}: write IPv6 addresses as [::1]:25")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid address {text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise ValueError(
                f"invalid address {text!r}: expected HOST:PORT, such as mail.example.com:25"
            )
        if ":" in host:
            raise ValueError(f"invalid address {text!r}: write IPv6 addresses as [::1]:25")
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(f"invalid address {text!r}: {host!r} is not a valid host name")
    port = parse_port(port_text)
    if port is None:
        raise ValueError(f"invalid address {text!r}: port must be a number from 1 to 65535")
    return Address(host, port)


def parse_port(text: str) -> int | None:
    """A TCP port written in ASCII digits, or None."""
    port = ascii_int(text, max_digits=5)
    return port if port is not None and 0 < port < 65536 else None
