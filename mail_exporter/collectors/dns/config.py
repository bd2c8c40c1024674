"""The ``dns`` section: what to check and through which resolvers, as the package registers it.

Its own module because :mod:`.checks` reads it too, and the package imports that.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field

from mail_exporter.config.collectors import CollectorSection
from mail_exporter.config.fields import CAFile, Duration, StrictModel


def _ip_address(value: str) -> str:
    return str(ipaddress.ip_address(value))


class DnsResolverConfig(StrictModel):
    """A DNS resolver: its addresses and port, else the system's (/etc/resolv.conf)."""

    nameservers: list[Annotated[str, AfterValidator(_ip_address)]] = Field(default_factory=list)
    port: int = Field(default=53, ge=1, le=65535)
    timeout: Duration = Field(default="5s", validate_default=True)  # per lookup, retries included


def _default_ip_blocklists() -> list[str]:
    return ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org", "psbl.surriel.com"]


class DnsConfig(CollectorSection):
    """DNS and reputation of the mail domains and sending IPs; runs on its own interval."""

    interval: Duration = Field(default="15m", validate_default=True)
    domains: list[str] = Field(default_factory=list)
    # The MX hosts every domain is expected to publish: each is DANE-checked, and each
    # (domain, host) pair reports whether the domain's MX records name it.
    mx_hosts: list[str] = Field(default_factory=list)
    sending_ips: list[Annotated[str, AfterValidator(_ip_address)]] = Field(default_factory=list)
    helo_name: str | None = None
    dkim_selectors: list[str] = Field(default_factory=list)  # checked for every domain
    ip_blocklists: list[str] = Field(default_factory=_default_ip_blocklists)
    domain_blocklists: list[str] = Field(default_factory=lambda: ["dbl.spamhaus.org"])
    resolver: DnsResolverConfig = DnsResolverConfig()
    # Blocklists refuse public resolvers (Spamhaus answers 127.255.255.254): give them a
    # resolver of your own here; default: ``resolver``.
    blocklist_resolver: DnsResolverConfig | None = None
    # Both resolvers' queries and the STARTTLS handshakes together.
    max_in_flight: int = Field(default=20, ge=1, le=1000)
    mta_sts: bool = True
    # The CAs of the policy's HTTPS and of the MX certificates; default: the system's.
    mta_sts_ca_file: CAFile | None = None
    mta_sts_port: int = Field(default=25, ge=1, le=65535)  # where the MX certificates are read
    dane: bool = True
    dane_port: int = Field(default=25, ge=1, le=65535)
