"""The metric families of one pass of DNS checks, and the error counters of all passes.

A check whose lookup failed leaves its series out (and counts the error); a series is
0 only when the DNS answered and the answer was bad.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mail_exporter.collectors.dns.checks import Results
from mail_exporter.collectors.dns.dnsbl import Listing
from mail_exporter.collectors.dns.records import DomainRecords

BLOCKLIST_ERROR_REASONS = ("refused", "unexpected_answer", "timeout", "servfail", "error")
T = TypeVar("T")


def _gauge(name: str, help: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help, labels=labels)


def _per(
    name: str,
    help: str,
    label: str,
    items: Mapping[str, T],
    value: Callable[[T], bool | float | None],
) -> GaugeMetricFamily:
    family = _gauge(name, help, [label])
    for key, item in items.items():
        found = value(item)
        if found is not None:
            family.add_metric([key], float(found))
    return family


def _domain_families(domains: Mapping[str, DomainRecords]) -> list[Metric]:
    def per(name: str, help: str, value: Callable[[DomainRecords], bool | float | None]) -> Metric:
        return _per(name, help, "domain", domains, value)

    mx = _gauge("mail_dns_mx_resolvable", "1 if the MX host has an A or AAAA address.",
                ["domain", "mx"])  # fmt: skip
    expected = _gauge("mail_dns_mx_expected",
                      "1 if the domain's MX records name the configured MX host (mx_hosts).",
                      ["domain", "mx"])  # fmt: skip
    policy = _gauge("mail_dns_dmarc_policy_info",
                    "The DMARC policy (p=): none, quarantine, reject or invalid.",
                    ["domain", "policy"])  # fmt: skip
    dkim = _gauge("mail_dns_dkim_key_present",
                  "1 if the DKIM selector's key is published (not revoked).",
                  ["domain", "selector"])  # fmt: skip
    bits = _gauge("mail_dns_dkim_key_size",
                  "Size of the DKIM selector's public key in bits (RSA modulus; 256 for Ed25519).",
                  ["domain", "selector"])  # fmt: skip
    for domain, records in domains.items():
        for host, resolvable in records.mx_resolvable.items():
            mx.add_metric([domain, host], float(resolvable))
        for host, named in records.mx_expected.items():
            expected.add_metric([domain, host], float(named))
        if records.dmarc_policy is not None:
            policy.add_metric([domain, records.dmarc_policy], 1.0)
        for selector, present in records.dkim_present.items():
            dkim.add_metric([domain, selector], float(present))
        for selector, size in records.dkim_bits.items():
            bits.add_metric([domain, selector], float(size))
    return [
        per("mail_dns_mx_records", "MX hosts the domain names (0: none, or a null MX).",
            lambda r: None if r.mx_hosts is None else len(r.mx_hosts)),
        mx,
        expected,
        per("mail_dns_mx_unexpected_hosts",
            "MX hosts the domain names that are not among the configured mx_hosts.",
            lambda r: r.mx_unexpected),
        per("mail_dns_spf_records", "v=spf1 TXT records of the domain (exactly 1 is right).",
            lambda r: r.spf_records),
        per("mail_dns_spf_valid",
            "1 if the domain has one SPF record that parses and stays within 10 DNS lookups "
            "and 2 void lookups.",
            lambda r: r.spf_valid),
        per("mail_dns_spf_lookups",
            "DNS lookups the SPF record costs, through include and redirect (limit 10).",
            lambda r: r.spf_lookups),
        per("mail_dns_spf_void_lookups",
            "Lookups of the SPF record's a and mx terms that find nothing (limit 2).",
            lambda r: r.spf_void_lookups),
        per("mail_dns_dmarc_present", "1 if _dmarc.<domain> has exactly one DMARC record.",
            lambda r: r.dmarc_present),
        policy,
        per("mail_dns_dmarc_applied_ratio", "Share of mail the DMARC policy applies to (pct/100).",
            lambda r: r.dmarc_ratio),
        dkim,
        bits,
        per("mail_dns_tls_rpt_present", "1 if _smtp._tls.<domain> has one TLS-RPT record.",
            lambda r: r.tls_rpt_present),
    ]  # fmt: skip


def _mta_sts_families(results: Results) -> list[Metric]:
    sts = results.mta_sts
    mode = _gauge("mail_dns_mta_sts_mode_info", "The MTA-STS policy's mode.", ["domain", "mode"])
    for domain, found in sts.items():
        if found.policy is not None and found.policy.mode is not None and found.policy_valid:
            mode.add_metric([domain, found.policy.mode], 1.0)
    return [
        _per("mail_dns_mta_sts_present", "1 if _mta-sts.<domain> has one STSv1 record.",
             "domain", sts, lambda s: s.record_present),
        _per("mail_dns_mta_sts_policy_valid",
             "1 if the fetched MTA-STS policy has version, a known mode and max_age.",
             "domain", sts, lambda s: s.policy_valid),
        mode,
        _per("mail_dns_mta_sts_max_age_seconds", "The MTA-STS policy's max_age.", "domain", sts,
             lambda s: s.policy.max_age if s.policy is not None and s.policy_valid else None),
        _per("mail_dns_mta_sts_mx_covered",
             "1 if every MX host of the domain matches an mx pattern of its MTA-STS policy.",
             "domain", sts, lambda s: s.mx_covered),
    ]  # fmt: skip


def _dnssec(results: Results) -> Metric:
    family = _gauge("mail_dns_dnssec_validated",
                    "1 if the resolver set the AD bit (DNSSEC-validated) on the name's answer.",
                    ["name"])  # fmt: skip
    for domain, records in results.domains.items():
        if records.mx_authenticated is not None:
            family.add_metric([domain], float(records.mx_authenticated))
    for host, dane in results.dane.items():
        if dane.authenticated is not None:
            family.add_metric([f"_25._tcp.{host}"], float(dane.authenticated))
    return family


def _address_matches(results: Results) -> Metric:
    family = _gauge("mail_dns_dane_address_tlsa_matches",
                    "1 if a usable TLSA record of the MX authenticates the chain this address "
                    "showed; absent for an address without a handshake.",
                    ["mx", "address"])  # fmt: skip
    for host, dane in results.dane.items():
        for address, matches in dane.address_matches.items():
            family.add_metric([host, address], float(matches))
    return family


def _reverse_families(results: Results) -> list[Metric]:
    rdns = results.reverse
    return [
        _per("mail_dns_ptr_present", "1 if the sending IP has a PTR record.", "ip", rdns,
             lambda r: r.ptr_present),
        _per("mail_dns_ptr_forward_confirmed",
             "1 if a PTR name of the sending IP resolves back to it (FCrDNS).", "ip", rdns,
             lambda r: r.forward_confirmed),
        _per("mail_dns_ptr_matches_helo",
             "1 if a PTR name of the sending IP is the configured HELO name.", "ip", rdns,
             lambda r: r.matches_helo),
    ]  # fmt: skip


def _listed(
    name: str, help: str, label: str, listings: Mapping[tuple[str, str], Listing]
) -> Metric:
    family = _gauge(name, help, ["zone", label, "code"])
    for (zone, key), listing in listings.items():
        if listing.error is not None:
            continue
        for code in listing.codes:
            family.add_metric([zone, key, code], 1.0)
        if not listing.codes:
            family.add_metric([zone, key, ""], 0.0)
    return family


def result_families(results: Results) -> list[Metric]:
    families: list[Metric] = [
        *_domain_families(results.domains),
        *_mta_sts_families(results),
        _per("mail_dns_dane_tlsa_records", "TLSA records at _25._tcp.<mx>.", "mx", results.dane,
             lambda d: d.records),
        _per("mail_dns_dane_tlsa_usable_records",
             "TLSA records an SMTP client can use: usage 2 or 3, known selector and matching type.",
             "mx", results.dane, lambda d: d.usable),
        _per("mail_dns_dane_tlsa_matches",
             "1 if a usable TLSA record of the MX authenticates the chain its STARTTLS showed "
             "on every address checked (0: on some address it does not).",
             "mx", results.dane, lambda d: d.matches),
        _per("mail_dns_dane_addresses_checked",
             "Addresses of the MX a STARTTLS handshake was tried with (at most 4).",
             "mx", results.dane, lambda d: d.addresses_checked if d.usable else None),
        _address_matches(results),
        _dnssec(results),
        *_reverse_families(results),
        _listed("mail_dnsbl_listed",
                "1 with the return code (127.0.0.2-255) when the IP is listed, 0 with code=\"\" "
                "when not; absent when the check failed.", "ip", results.ip_listings),
        _listed("mail_dnsbl_domain_listed",
                "1 with the return code when the domain is listed, 0 with code=\"\" when not.",
                "domain", results.domain_listings),
    ]  # fmt: skip
    last = _gauge("mail_dns_last_run_timestamp_seconds", "When the last DNS checks finished.", [])
    last.add_metric([], results.finished_at)
    families.append(last)
    return [family for family in families if family.samples]


def error_families(
    check_errors: Counter[tuple[str, str]],
    blocklist_errors: Counter[tuple[str, str]],
    zones: Iterable[str],
) -> list[Metric]:
    checks = CounterMetricFamily(
        "mail_dns_check_errors",
        "DNS checks that ended without a verdict (timeout, servfail, error; MTA-STS policy "
        "fetch: http_status, tls, connect; DANE SMTP: resolve, connect, timeout).",
        labels=["check", "reason"],
    )
    for (check, reason), count in sorted(check_errors.items()):
        checks.add_metric([check, reason], count)
    blocklists = CounterMetricFamily(
        "mail_dnsbl_check_errors",
        "Blocklist lookups without a verdict: refused (127.255.255.x, or 127.0.1.255 from a "
        "domain list), unexpected_answer, timeout, servfail, error. Never counted as listed.",
        labels=["zone", "reason"],
    )
    for zone in sorted(set(zones) | {zone for zone, _ in blocklist_errors}):
        for reason in BLOCKLIST_ERROR_REASONS:
            blocklists.add_metric([zone, reason], blocklist_errors[(zone, reason)])
    return [checks, blocklists]
