"""The ``dns`` collector: will the rest of the world accept our mail?

MX, SPF, DMARC, DKIM and TLS-RPT records of each configured domain
(:mod:`.records`, :mod:`.spf`), its MTA-STS policy and the certificates of the MX hosts
it covers (:mod:`.mtasts`), DANE TLSA records against the certificate each address of
each MX shows (:mod:`.dane`; both read it by :mod:`.starttls`), reverse DNS of
each sending IP (:mod:`.rdns`) and blocklist listings (:mod:`.dnsbl`), through
dnspython's async resolver (:mod:`.resolver`), on the section's own interval
(:mod:`.collector`). The section is :mod:`.config`.

Sample output::

    mail_dns_spf_valid{domain="example.com"} 1.0
    mail_dns_spf_lookups{domain="example.com"} 4.0
    mail_dns_dmarc_policy_info{domain="example.com",policy="reject"} 1.0
    mail_dns_dkim_key_size{domain="example.com",selector="mail"} 2048.0
    mail_dns_mta_sts_mode_info{domain="example.com",mode="enforce"} 1.0
    mail_dns_mta_sts_mx_certificate_valid{domain="example.com",mx="mx1.example.com"} 1.0
    mail_dns_dane_tlsa_matches{mx="mx1.example.com"} 1.0
    mail_dns_dane_address_tlsa_matches{address="2001:db8::25",mx="mx1.example.com"} 1.0
    mail_dns_ptr_forward_confirmed{ip="192.0.2.25"} 1.0
    mail_dnsbl_listed{code="127.0.0.2",ip="192.0.2.25",zone="zen.spamhaus.org"} 1.0
    mail_dnsbl_listed{code="",ip="192.0.2.25",zone="bl.spamcop.net"} 0.0
    mail_dnsbl_check_errors_total{reason="refused",zone="zen.spamhaus.org"} 0.0
"""

from __future__ import annotations

from mail_exporter.collectors.base import Collector, register_collector
from mail_exporter.collectors.dns.collector import DnsCollector
from mail_exporter.collectors.dns.config import DnsConfig


@register_collector(
    "dns", "MX, SPF, DMARC, DKIM, MTA-STS, TLS-RPT, DANE, reverse DNS and blocklists", DnsConfig
)
def _dns(section: DnsConfig, previous: Collector | None) -> DnsCollector:
    return DnsCollector(section, previous=previous if isinstance(previous, DnsCollector) else None)
