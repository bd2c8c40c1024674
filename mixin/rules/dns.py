"""Alerts on the DNS checks: blocklists, SPF, DMARC, DKIM, MX, PTR, MTA-STS, DANE."""

from __future__ import annotations

from functools import partial

from mixin.config import Config
from mixin.promql import age, increase, sum_by
from mixin.rules.alert import HOST, HOST_LABELS, Alert, Example, fired, flag_alert, ramp, steady


def _mta_sts_alerts(c: Config, name: str, metric: str, summary: str, fault: str) -> list[Alert]:
    """Two rules of one name on a per-MX MTA-STS fact that is 0: critical when the domain's
    policy is in mode enforce (senders that apply it stop delivering to the MX), a warning
    in mode testing (they deliver and report; enforce would stop them). ``fault`` is the
    description's first sentence."""
    mx_labels = {"domain": "example.com", "mx": "mx1.example.com", **HOST_LABELS}
    fact = (f'{metric}{{domain="example.com",mx="mx1.example.com",{HOST}}}', steady(0))

    def mode(value: str) -> tuple[str, str]:
        sample = f'mail_dns_mta_sts_mode_info{{mode="{value}",domain="example.com",{HOST}}}'
        return sample, steady(1)

    def rule(policy: str) -> str:
        return (
            f"{metric}{c.matchers()} == 0 and on (instance, job, domain) "
            "mail_dns_mta_sts_mode_info" + c.matchers(f'mode="{policy}"') + " == 1"
        )

    enforce = (
        f"{fault}. The policy is in mode enforce: senders that apply MTA-STS (Gmail, "
        "Microsoft and others) do not deliver to this MX, and defer, then bounce, "
        "its mail."
    )
    testing = (
        f"{fault}. The policy is in mode testing: senders still deliver and send TLS "
        "reports, but switching it to enforce now would stop them."
    )
    critical, warning = fired(mx_labels, "critical"), fired(mx_labels, "warning")
    return [
        Alert(name, rule("enforce"), "critical", summary, enforce,
              Example([fact, mode("enforce")], [critical]),
              Example([fact, mode("testing")], [warning]), for_=c.dns_for,
              also=(Example([fact, mode("none")]),)),
        Alert(name, rule("testing"), "warning", summary, testing,
              Example([fact, mode("testing")], [warning]),
              Example([(fact[0], steady(1)), mode("testing")]), for_=c.dns_for),
    ]  # fmt: skip


def dns_alerts(c: Config) -> list[Alert]:
    listed = f'zone="zen.spamhaus.org",ip="192.0.2.25",{HOST}'
    listed_labels = {"zone": "zen.spamhaus.org", "ip": "192.0.2.25", **HOST_LABELS}
    domain = f'domain="example.com",{HOST}'
    domain_labels = {"domain": "example.com", **HOST_LABELS}
    dkim = f'domain="example.com",selector="mail",{HOST}'
    dkim_labels = {"domain": "example.com", "selector": "mail", **HOST_LABELS}
    mx_labels = {"domain": "example.com", "mx": "mx1.example.com", **HOST_LABELS}
    dane = f'mx="mx1.example.com",{HOST}'
    dane_labels = {"mx": "mx1.example.com", **HOST_LABELS}
    ip_labels = {"ip": "192.0.2.25", **HOST_LABELS}
    dbl = f'zone="dbl.spamhaus.org",domain="example.com",{HOST}'
    dbl_labels = {"zone": "dbl.spamhaus.org", "domain": "example.com", **HOST_LABELS}

    flag = partial(flag_alert, c, for_=c.dns_for)  # the 0/1 DNS facts that are 0

    return [
        Alert(
            "MailDnsblListed", f"mail_dnsbl_listed{c.matchers()} == 1", "critical",
            "A sending IP is on a blocklist.",
            "{{ $labels.ip }} is listed on {{ $labels.zone }} (return code {{ $labels.code }}): "
            "receivers that use this list reject or junk its mail.",
            Example([(f'mail_dnsbl_listed{{code="127.0.0.2",{listed}}}', steady(1))],
                    [fired(listed_labels, "critical", code="127.0.0.2")]),
            Example([(f'mail_dnsbl_listed{{code="",{listed}}}', steady(0))]),
            for_="0m",
        ),
        Alert(
            "MailDnsblDomainListed", f"mail_dnsbl_domain_listed{c.matchers()} == 1", "critical",
            "A mail domain is on a domain blocklist.",
            "{{ $labels.domain }} is listed on {{ $labels.zone }} (return code {{ $labels.code }}): "
            "mail naming it is rejected or junked.",
            Example([(f'mail_dnsbl_domain_listed{{code="127.0.1.2",{dbl}}}', steady(1))],
                    [fired(dbl_labels, "critical", code="127.0.1.2")]),
            Example([(f'mail_dnsbl_domain_listed{{code="",{dbl}}}', steady(0))]),
            for_="0m",
        ),
        Alert(
            "MailDnsblCheckFailing",
            sum_by("instance, job, zone, reason", increase("mail_dnsbl_check_errors_total", window="1h", config=c)) + " > 0",
            "warning", "A blocklist cannot be checked.",
            '{{ $value | printf "%.0f" }} lookups in {{ $labels.zone }} on {{ $labels.instance }} ended in '
            "{{ $labels.reason }} over the last hour: "
            "listings there go unseen. \"refused\" means the list refuses the resolver (public "
            "resolvers are refused by Spamhaus): set collectors.dns.blocklist_resolver.",
            Example([(f'mail_dnsbl_check_errors_total{{reason="refused",zone="zen.spamhaus.org",{HOST}}}', ramp(0, 1))],
                    [fired({"zone": "zen.spamhaus.org", "reason": "refused", **HOST_LABELS}, "warning")]),
            Example([(f'mail_dnsbl_check_errors_total{{reason="refused",zone="zen.spamhaus.org",{HOST}}}', steady(0))]),
            for_=c.dns_errors_for,
        ),
        Alert(
            "MailDnsCheckFailing",
            sum_by("instance, job, check, reason", increase("mail_dns_check_errors_total", window="1h", config=c)) + " > 0",
            "warning", "A DNS check cannot be done.",
            '{{ $value | printf "%.0f" }} {{ $labels.check }} checks on {{ $labels.instance }} ended in '
            "{{ $labels.reason }} over the last hour: their series are left out, so the alerts on "
            "them cannot fire.",
            Example([(f'mail_dns_check_errors_total{{check="spf",reason="servfail",{HOST}}}', ramp(0, 1))],
                    [fired({"check": "spf", "reason": "servfail", **HOST_LABELS}, "warning")]),
            Example([(f'mail_dns_check_errors_total{{check="spf",reason="servfail",{HOST}}}', steady(2))]),
            for_=c.dns_errors_for,
        ),
        flag("MailSpfInvalid", "mail_dns_spf_valid", domain_labels, "critical",
             "A mail domain's SPF record is broken.",
             "{{ $labels.domain }} has no single valid SPF record, needs more than 10 DNS "
             "lookups or makes more than 2 void lookups (see mail_dns_spf_records, "
             "mail_dns_spf_lookups and mail_dns_spf_void_lookups): receivers treat its mail "
             "as failing SPF."),
        flag("MailDmarcMissing", "mail_dns_dmarc_present", domain_labels, "warning",
             "A mail domain has no DMARC record.",
             "_dmarc.{{ $labels.domain }} has no (single) DMARC record: large receivers junk or "
             "reject mail from domains without one."),
        flag("MailDkimKeyMissing", "mail_dns_dkim_key_present", dkim_labels, "critical",
             "A DKIM key is not published.",
             "{{ $labels.selector }}._domainkey.{{ $labels.domain }} has no key (missing or "
             "revoked): mail signed with this selector fails DKIM."),
        Alert(
            "MailDkimKeyWeak",
            # 256 bits is an Ed25519 key: strong, though small next to RSA's sizes.
            f"mail_dns_dkim_key_size{c.matchers()} < {c.dkim_min_key_bits}"
            f" and mail_dns_dkim_key_size{c.matchers()} != 256",
            "warning", "A DKIM key is too small.",
            "The DKIM key of {{ $labels.selector }}._domainkey.{{ $labels.domain }} has "
            f"{{{{ $value }}}} bits: verifiers refuse keys under {c.dkim_min_key_bits} (RFC 8301).",
            Example([(f"mail_dns_dkim_key_size{{{dkim}}}", steady(512))], [fired(dkim_labels, "warning")]),
            Example([(f"mail_dns_dkim_key_size{{{dkim}}}", steady(2048))]),
            for_=c.dns_for,
        ),
        flag("MailMxMissing", "mail_dns_mx_records", domain_labels, "critical",
             "A mail domain has no MX record.",
             "{{ $labels.domain }} names no MX host (none, or a null MX): senders fall back to "
             "its A record or give up, and its mail does not arrive."),
        flag("MailMxExpectedMissing", "mail_dns_mx_expected", mx_labels, "critical",
             "An expected MX host is not in the domain's MX records.",
             "The MX records of {{ $labels.domain }} do not name {{ $labels.mx }} "
             "(collectors.dns.mx_hosts): mail goes to other hosts, perhaps ones you do not run."),
        Alert(
            "MailMxUnexpectedHosts",
            f"mail_dns_mx_unexpected_hosts{c.matchers()} > 0",
            "warning", "A mail domain names MX hosts that are not configured.",
            "The MX records of {{ $labels.domain }} name {{ $value }} host(s) that are not in "
            "collectors.dns.mx_hosts: mail may go to a host you do not run (a hijack or a "
            "mistake), or the list is out of date.",
            Example([(f"mail_dns_mx_unexpected_hosts{{{domain}}}", steady(1))],
                    [fired(domain_labels, "warning")]),
            Example([(f"mail_dns_mx_unexpected_hosts{{{domain}}}", steady(0))]),
            for_=c.dns_for,
        ),
        flag("MailMxUnresolvable", "mail_dns_mx_resolvable", mx_labels, "critical",
             "An MX host has no address.",
             "MX {{ $labels.mx }} of {{ $labels.domain }} resolves to no A or AAAA address: "
             "senders cannot deliver to it."),
        flag("MailPtrNotConfirmed", "mail_dns_ptr_forward_confirmed", ip_labels, "warning",
             "A sending IP's reverse DNS is not forward-confirmed.",
             "{{ $labels.ip }} has no PTR, or its PTR name does not resolve back to it: many "
             "receivers reject mail from such IPs."),
        flag("MailPtrHeloMismatch", "mail_dns_ptr_matches_helo", ip_labels, "warning",
             "A sending IP's PTR is not the HELO name.",
             "No PTR name of {{ $labels.ip }} is the configured HELO name: receivers score "
             "the mismatch as spam."),
        *_mta_sts_alerts(
            c, "MailMtaStsMxNotCovered", "mail_dns_mta_sts_mx_host_covered",
            "An MX host is not listed in the domain's MTA-STS policy.",
            "MX {{ $labels.mx }} of {{ $labels.domain }} matches no mx line of its MTA-STS "
            "policy",
        ),
        *_mta_sts_alerts(
            c, "MailMtaStsCertificateInvalid", "mail_dns_mta_sts_mx_certificate_valid",
            "An MX's certificate fails the domain's MTA-STS policy.",
            "The certificate that MX {{ $labels.mx }} of {{ $labels.domain }} shows after "
            "STARTTLS does not verify up to a public CA or does not name {{ $labels.mx }}, "
            "as the domain's MTA-STS policy requires",
        ),
        flag("MailMtaStsPolicyInvalid", "mail_dns_mta_sts_policy_valid", domain_labels,
             "warning", "The MTA-STS policy is invalid.",
             "The MTA-STS policy of {{ $labels.domain }} lacks a version, a known mode or "
             "max_age: senders ignore it."),
        Alert(
            "MailDaneMismatch",
            # With no usable record, DANE senders fall back to unauthenticated TLS and still
            # deliver: that is MailDaneUnusable's warning, not this critical.
            f"mail_dns_dane_tlsa_usable_records{c.matchers()} > 0 and on (instance, job, mx) "
            f"mail_dns_dane_tlsa_matches{c.matchers()} == 0",
            "critical", "The DANE TLSA records do not match the MX's certificate.",
            "None of the {{ $value }} usable TLSA records of _25._tcp.{{ $labels.mx }} matches "
            "the certificate chain it presents after STARTTLS: DANE-validating senders "
            "(Postfix with DANE, large providers) will not deliver. Publish the new key's "
            "TLSA before rolling certificates.",
            Example([(f"mail_dns_dane_tlsa_matches{{{dane}}}", steady(0)),
                     (f"mail_dns_dane_tlsa_usable_records{{{dane}}}", steady(1))],
                    [fired(dane_labels, "critical")]),
            Example([(f"mail_dns_dane_tlsa_matches{{{dane}}}", steady(1)),
                     (f"mail_dns_dane_tlsa_usable_records{{{dane}}}", steady(1))]),
            for_=c.dns_for,
        ),
        Alert(
            "MailDaneUnusable",
            f"mail_dns_dane_tlsa_records{c.matchers()} > 0 and on (instance, job, mx) "
            f"mail_dns_dane_tlsa_usable_records{c.matchers()} == 0",
            "warning", "The MX's TLSA records are all unusable for SMTP.",
            "_25._tcp.{{ $labels.mx }} has {{ $value }} TLSA records, but none of usage 2 "
            "or 3 with a known selector and matching type (RFC 7672): DANE senders deliver "
            "over TLS without "
            "authenticating the MX, so the records protect nothing. Publish a 3 1 1 record.",
            Example([(f"mail_dns_dane_tlsa_records{{{dane}}}", steady(2)),
                     (f"mail_dns_dane_tlsa_usable_records{{{dane}}}", steady(0))],
                    [fired(dane_labels, "warning")]),
            Example([(f"mail_dns_dane_tlsa_records{{{dane}}}", steady(2)),
                     (f"mail_dns_dane_tlsa_usable_records{{{dane}}}", steady(1))]),
            for_=c.dns_for,
        ),
        Alert(
            "MailDnsChecksStale",
            f"{age('mail_dns_last_run_timestamp_seconds', config=c)} > {c.dns_stale_seconds}",
            "warning", "The DNS checks have not finished for a while.",
            "mail_exporter on {{ $labels.instance }} has no finished DNS pass for "
            "{{ $value | humanizeDuration }}: the DNS and blocklist facts are old.",
            Example([(f"mail_dns_last_run_timestamp_seconds{{{HOST}}}", steady(0))], [fired(HOST_LABELS, "warning")]),
            Example([(f"mail_dns_last_run_timestamp_seconds{{{HOST}}}", ramp(0, 60))]),
            for_="15m",
        ),
    ]  # fmt: skip
