"""The metric families of one pass of DNS checks, and the error counters of all passes.

A check whose lookup failed leaves its series out (and counts the error); a series is
0 only when the DNS answered and the answer was bad.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import Metric

from mail_exporter.collectors.dns.checks import Results
from mail_exporter.collectors.dns.dnsbl import Listing
from mail_exporter.metric_spec import MetricSpec, Row, as_is

BLOCKLIST_ERROR_REASONS = ("refused", "unexpected_answer", "timeout", "servfail", "error")
DOMAIN, MX, IP = ("domain",), ("mx",), ("ip",)

MX_RECORDS = MetricSpec(
    "mail_dns_mx_records", "MX hosts the domain names (0: none, or a null MX).", "gauge", DOMAIN,
    lambda r: None if r.mx_hosts is None else len(r.mx_hosts),
)  # fmt: skip
MX_RESOLVABLE = MetricSpec(
    "mail_dns_mx_resolvable", "1 if the MX host has an A or AAAA address.", "gauge",
    ("domain", "mx"), as_is,
)  # fmt: skip
MX_EXPECTED = MetricSpec(
    "mail_dns_mx_expected", "1 if the domain's MX records name the configured MX host (mx_hosts).",
    "gauge", ("domain", "mx"), as_is,
)  # fmt: skip
DOMAIN_RECORDS = (
    MetricSpec("mail_dns_mx_unexpected_hosts", "MX hosts the domain names that are not among the "
        "configured mx_hosts.", "gauge", DOMAIN, lambda r: r.mx_unexpected),
    MetricSpec("mail_dns_spf_records", "v=spf1 TXT records of the domain (exactly 1 is right).",
        "gauge", DOMAIN, lambda r: r.spf_records),
    MetricSpec("mail_dns_spf_valid", "1 if the domain has one SPF record that parses and stays "
        "within 10 DNS lookups and 2 void lookups.", "gauge", DOMAIN, lambda r: r.spf_valid),
    MetricSpec("mail_dns_spf_lookups", "DNS lookups the SPF record costs, through include and "
        "redirect (limit 10).", "gauge", DOMAIN, lambda r: r.spf_lookups),
    MetricSpec("mail_dns_spf_void_lookups", "Lookups of the SPF record's a and mx terms that find "
        "nothing (limit 2).", "gauge", DOMAIN, lambda r: r.spf_void_lookups),
    MetricSpec("mail_dns_dmarc_present", "1 if _dmarc.<domain> has exactly one DMARC record.",
        "gauge", DOMAIN, lambda r: r.dmarc_present),
)  # fmt: skip
DMARC_POLICY = MetricSpec(
    "mail_dns_dmarc_policy_info", "The DMARC policy (p=): none, quarantine, reject or invalid.",
    "gauge", ("domain", "policy"), as_is,
)  # fmt: skip
DMARC_RATIO = MetricSpec(
    "mail_dns_dmarc_applied_ratio", "Share of mail the DMARC policy applies to (pct/100).", "gauge",
    DOMAIN, lambda r: r.dmarc_ratio,
)  # fmt: skip
DKIM_PRESENT = MetricSpec(
    "mail_dns_dkim_key_present", "1 if the DKIM selector's key is published (not revoked).",
    "gauge", ("domain", "selector"), as_is,
)  # fmt: skip
DKIM_SIZE = MetricSpec(
    "mail_dns_dkim_key_size", "Size of the DKIM selector's public key in bits (RSA modulus; 256 "
    "for Ed25519).", "gauge", ("domain", "selector"), as_is,
)  # fmt: skip
TLS_RPT = MetricSpec(
    "mail_dns_tls_rpt_present", "1 if _smtp._tls.<domain> has one TLS-RPT record.", "gauge",
    DOMAIN, lambda r: r.tls_rpt_present,
)  # fmt: skip
MTA_STS_PRESENT = MetricSpec(
    "mail_dns_mta_sts_present", "1 if _mta-sts.<domain> has one STSv1 record.", "gauge", DOMAIN,
    lambda s: s.record_present,
)  # fmt: skip
MTA_STS_VALID = MetricSpec(
    "mail_dns_mta_sts_policy_valid", "1 if the fetched MTA-STS policy has version, a known mode "
    "and max_age.", "gauge", DOMAIN, lambda s: s.policy_valid,
)  # fmt: skip
MTA_STS_MODE = MetricSpec(
    "mail_dns_mta_sts_mode_info", "The MTA-STS policy's mode.", "gauge", ("domain", "mode"), as_is,
)  # fmt: skip
MTA_STS_MAX_AGE = MetricSpec(
    "mail_dns_mta_sts_max_age_seconds", "The MTA-STS policy's max_age.", "gauge", DOMAIN,
    lambda s: s.policy.max_age if s.policy is not None and s.policy_valid else None,
)  # fmt: skip
MTA_STS_COVERED = MetricSpec(
    "mail_dns_mta_sts_mx_covered", "1 if every MX host of the domain matches an mx pattern of its "
    "MTA-STS policy.", "gauge", DOMAIN, lambda s: s.mx_covered,
)  # fmt: skip
MTA_STS_HOST_COVERED = MetricSpec(
    "mail_dns_mta_sts_mx_host_covered", "1 if the MX host matches an mx pattern of the domain's "
    "MTA-STS policy.", "gauge", ("domain", "mx"), as_is,
)  # fmt: skip
MTA_STS_CERTIFICATE = MetricSpec(
    "mail_dns_mta_sts_mx_certificate_valid", "1 if the MX host, covered by an MTA-STS policy in "
    "mode enforce or testing, showed after STARTTLS a chain that verifies (web PKI) and names it, "
    "on every address checked.", "gauge", ("domain", "mx"), as_is,
)  # fmt: skip
DANE = (
    MetricSpec("mail_dns_dane_tlsa_records", "TLSA records at _25._tcp.<mx>.", "gauge", MX,
        lambda d: d.records),
    MetricSpec("mail_dns_dane_tlsa_usable_records", "TLSA records an SMTP client can use: usage 2 "
        "or 3, known selector and matching type.", "gauge", MX, lambda d: d.usable),
    MetricSpec("mail_dns_dane_tlsa_matches", "1 if a usable TLSA record of the MX authenticates "
        "the chain its STARTTLS showed on every address checked (0: on some address it does not).",
        "gauge", MX, lambda d: d.matches),
    MetricSpec("mail_dns_dane_addresses_checked", "Addresses of the MX a STARTTLS handshake was "
        "tried with (at most 4).", "gauge", MX,
        lambda d: d.addresses_checked if d.usable else None),
)  # fmt: skip
DANE_ADDRESS = MetricSpec(
    "mail_dns_dane_address_tlsa_matches", "1 if a usable TLSA record of the MX authenticates the "
    "chain this address showed; absent for an address without a handshake.", "gauge",
    ("mx", "address"), as_is,
)  # fmt: skip
DNSSEC = MetricSpec(
    "mail_dns_dnssec_validated", "1 if the resolver set the AD bit (DNSSEC-validated) on the "
    "name's answer.", "gauge", ("name",), as_is,
)  # fmt: skip
REVERSE = (
    MetricSpec("mail_dns_ptr_present", "1 if the sending IP has a PTR record.", "gauge", IP,
        lambda r: r.ptr_present),
    MetricSpec("mail_dns_ptr_forward_confirmed", "1 if a PTR name of the sending IP resolves back "
        "to it (FCrDNS).", "gauge", IP, lambda r: r.forward_confirmed),
    MetricSpec("mail_dns_ptr_matches_helo", "1 if a PTR name of the sending IP is the configured "
        "HELO name.", "gauge", IP, lambda r: r.matches_helo),
)  # fmt: skip
IP_LISTED = MetricSpec(
    "mail_dnsbl_listed", "1 with the return code (127.0.0.2-255) when the IP is listed, 0 with "
    "code=\"\" when not; absent when the check failed.", "gauge", ("zone", "ip", "code"), as_is,
)  # fmt: skip
DOMAIN_LISTED = MetricSpec(
    "mail_dnsbl_domain_listed", "1 with the return code when the domain is listed, 0 with "
    "code=\"\" when not.", "gauge", ("zone", "domain", "code"), as_is,
)  # fmt: skip
LAST_RUN = MetricSpec(
    "mail_dns_last_run_timestamp_seconds", "When the last DNS checks finished.", "gauge", (),
    as_is,
)  # fmt: skip
CHECK_ERRORS = MetricSpec(
    "mail_dns_check_errors_total", "DNS checks that ended without a verdict (timeout, servfail, "
    "error; MTA-STS policy fetch: http_status, tls, connect; DANE and MTA-STS SMTP: resolve, "
    "connect, timeout).", "counter", ("check", "reason"), as_is,
)  # fmt: skip
BLOCKLIST_ERRORS = MetricSpec(
    "mail_dnsbl_check_errors_total", "Blocklist lookups without a verdict: refused "
    "(127.255.255.x, or 127.0.1.255 from a domain list), unexpected_answer, timeout, servfail, "
    "error. Never counted as listed.", "counter", ("zone", "reason"), as_is,
)  # fmt: skip


def _by_key(items: Mapping[str, Any]) -> list[Row]:
    return [((key,), item) for key, item in items.items()]


def _nested(items: Mapping[str, Any], values: str) -> Iterator[Row]:
    """A sample per entry of each item's mapping ``values``: (item key, entry key) labels."""
    for key, item in items.items():
        for inner, value in getattr(item, values).items():
            yield (key, inner), value


def _listed(listings: Mapping[tuple[str, str], Listing]) -> Iterator[Row]:
    for (zone, key), listing in listings.items():
        if listing.error is not None:
            continue
        for code in listing.codes:
            yield (zone, key, code), 1.0
        if not listing.codes:
            yield (zone, key, ""), 0.0


def _dnssec(results: Results) -> Iterator[Row]:
    for domain, records in results.domains.items():
        yield (domain,), records.mx_authenticated
    for host, dane in results.dane.items():
        yield (f"_25._tcp.{host}",), dane.authenticated


def result_families(results: Results) -> list[Metric]:
    domains, sts = results.domains, results.mta_sts
    by_domain, by_mx = _by_key(domains), _by_key(results.dane)
    policies = ((d, r.dmarc_policy) for d, r in domains.items() if r.dmarc_policy is not None)
    modes = (
        (d, s.policy.mode)
        for d, s in sts.items()
        if s.policy is not None and s.policy.mode is not None and s.policy_valid
    )
    families = [
        MX_RECORDS.family(by_domain),
        MX_RESOLVABLE.family(_nested(domains, "mx_resolvable")),
        MX_EXPECTED.family(_nested(domains, "mx_expected")),
        *(spec.family(by_domain) for spec in DOMAIN_RECORDS),
        DMARC_POLICY.family(((domain, policy), 1.0) for domain, policy in policies),
        DMARC_RATIO.family(by_domain),
        DKIM_PRESENT.family(_nested(domains, "dkim_present")),
        DKIM_SIZE.family(_nested(domains, "dkim_bits")),
        TLS_RPT.family(by_domain),
        MTA_STS_PRESENT.family(_by_key(sts)),
        MTA_STS_VALID.family(_by_key(sts)),
        MTA_STS_MODE.family(((domain, mode), 1.0) for domain, mode in modes),
        MTA_STS_MAX_AGE.family(_by_key(sts)),
        MTA_STS_COVERED.family(_by_key(sts)),
        MTA_STS_HOST_COVERED.family(_nested(sts, "mx_hosts_covered")),
        MTA_STS_CERTIFICATE.family(_nested(sts, "mx_certificates_valid")),
        *(spec.family(by_mx) for spec in DANE),
        DANE_ADDRESS.family(_nested(results.dane, "address_matches")),
        DNSSEC.family(_dnssec(results)),
        *(spec.family(_by_key(results.reverse)) for spec in REVERSE),
        IP_LISTED.family(_listed(results.ip_listings)),
        DOMAIN_LISTED.family(_listed(results.domain_listings)),
        LAST_RUN.family([((), results.finished_at)]),
    ]
    return [family for family in families if family.samples]


def error_families(
    check_errors: Counter[tuple[str, str]],
    blocklist_errors: Counter[tuple[str, str]],
    zones: Iterable[str],
) -> list[Metric]:
    every_zone = sorted(set(zones) | {zone for zone, _ in blocklist_errors})
    return [
        CHECK_ERRORS.family(sorted(check_errors.items())),
        BLOCKLIST_ERRORS.family(
            ((zone, reason), blocklist_errors[(zone, reason)])
            for zone in every_zone
            for reason in BLOCKLIST_ERROR_REASONS
        ),
    ]
