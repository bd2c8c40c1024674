"""The overview's "DNS and reputation" row: each mail domain's records (MX, SPF, DMARC,
MTA-STS, TLS-RPT), blocklist listings, and the per-host and per-name DNS facts (PTR, DANE,
MTA-STS per MX, DKIM, DNSSEC), from the dns collector; and what the DMARC and TLS-RPT
reports say of each domain, linked to the reports dashboard."""

from __future__ import annotations

from typing import Any

from mixin.config import CONFIG
from mixin.dashboards.reports import (
    DMARC_SHARE,
    TLS_SHARE,
    dmarc_failing_share,
    reports_link,
    tls_failed_share,
)
from mixin.grafana import (
    NAMED,
    Panel,
    Query,
    Row,
    flag,
    stat,
    state_timeline,
    table,
    thresholds,
    timeseries,
)
from mixin.promql import increase, series, sum_by

MATCH_MISMATCH = flag(("matches", "green"), ("mismatch", "red"))
LISTED = flag(("listed", "red"), ("not listed", "green"))


def dns_row() -> Row:
    def dns_stat(title: str, description: str, query: Query, **options: Any) -> Panel:
        """A quarter-row stat with each series' name: the row's per-host/per-name facts."""
        return stat(title, description, query, text=NAMED, width=6, height=6, **options)

    return Row(
        "DNS and reputation",
        [
            table(
                "Mail domains",
                "One row per configured domain: MX hosts named (0: none or a null MX), SPF "
                "(valid, DNS lookups of RFC 7208's 10, void lookups of its 2), DMARC policy, "
                "MTA-STS mode, whether its policy is valid and covers every MX, TLS-RPT. A "
                "missing cell is a lookup that failed (see DNS check errors).",
                Query(series("mail_dns_spf_valid")),
                Query(series("mail_dns_spf_lookups")),
                Query(series("mail_dns_spf_void_lookups")),
                Query(series("mail_dns_dmarc_present")),
                Query(series("mail_dns_dmarc_policy_info")),
                Query(series("mail_dns_mta_sts_mx_covered")),
                Query(series("mail_dns_mta_sts_mode_info")),
                Query(series("mail_dns_tls_rpt_present")),
                Query(series("mail_dns_mx_records")),
                Query(series("mail_dns_mta_sts_policy_valid")),
                columns={
                    "domain": "Domain",
                    "Value #I": "MX hosts",
                    "Value #A": "SPF",
                    "Value #B": "SPF lookups",
                    "Value #C": "SPF void lookups",
                    "Value #D": "DMARC",
                    "policy": "DMARC policy",
                    "Value #F": "MTA-STS covers MX",
                    "mode": "MTA-STS mode",
                    "Value #J": "MTA-STS policy valid",
                    "Value #H": "TLS-RPT",
                },
                hidden=("instance", "Value #E", "Value #G"),
                width=24,
            ),
            state_timeline(
                "Blocklist listings",
                "Each sending IP on each IP blocklist, and each mail domain on each domain "
                "blocklist (Spamhaus DBL): listed (with its return code) or not. Gaps are "
                "lookups without a verdict (refused, timeout): never counted as listed.",
                Query(series("mail_dnsbl_listed"), "{{ip}} {{zone}}"),
                Query(series("mail_dnsbl_domain_listed"), "{{domain}} {{zone}}"),
                mappings=LISTED,
                height=8,
            ),
            timeseries(
                "Blocklist check errors",
                "Blocklist lookups without a verdict per interval: refused (127.255.255.x: the "
                "list refuses this resolver), unexpected_answer, timeout, servfail.",
                Query(sum_by("zone, reason", increase("mail_dnsbl_check_errors_total")) + " > 0",
                      "{{zone}} {{reason}}"),
                Query(sum_by("check, reason", increase("mail_dns_check_errors_total")) + " > 0",
                      "{{check}} {{reason}}"),
                bars=True,
            ),
            dns_stat(
                "Reverse DNS forward-confirmed",
                "Per sending IP: its PTR name resolves back to it.",
                Query(series("mail_dns_ptr_forward_confirmed"), "{{ip}}"),
                mappings=flag(("confirmed", "green"), ("not confirmed", "red")),
            ),
            dns_stat(
                "PTR matches HELO",
                "Per sending IP: a PTR name is the configured HELO name.",
                Query(series("mail_dns_ptr_matches_helo"), "{{ip}}"),
                mappings=flag(("matches", "green"), ("mismatch", "orange")),
            ),
            dns_stat(
                "DANE",
                "Per MX with TLSA records: a usable record (usage 2 or 3, RFC 7672) matches the "
                "chain its STARTTLS shows; with none usable, mismatch (see MailDaneUnusable).",
                Query(series("mail_dns_dane_tlsa_matches"), "{{mx}}"),
                mappings=MATCH_MISMATCH,
            ),
            dns_stat(
                "DKIM key bits",
                "Per domain and selector: the published key's size (red under "
                f"{CONFIG.dkim_min_key_bits}, absent when missing; mail_dns_dkim_key_present "
                "says which).",
                Query(series("mail_dns_dkim_key_size"), "{{selector}}._domainkey.{{domain}}"),
                steps=thresholds("red", (CONFIG.dkim_min_key_bits, "orange"),
                                 (CONFIG.dkim_good_key_bits, "green")),
            ),
            dns_stat(
                "MX hosts resolvable",
                "Per MX host of each domain: it has an A or AAAA address senders can deliver to.",
                Query(series("mail_dns_mx_resolvable"), "{{mx}} ({{domain}})"),
                mappings=flag(("resolves", "green"), ("no address", "red")),
            ),
            dns_stat(
                "DKIM key published",
                "Per domain and selector: a key is published (missing or revoked: mail signed "
                "with the selector fails DKIM).",
                Query(series("mail_dns_dkim_key_present"), "{{selector}}._domainkey.{{domain}}"),
                mappings=flag(("published", "green"), ("missing", "red")),
            ),
            dns_stat(
                "Usable TLSA records",
                "Per MX that publishes TLSA records: those an SMTP client can use (usage 2 or 3, "
                "RFC 7672). 0 is MailDaneUnusable: DANE protects nothing.",
                Query(series("mail_dns_dane_tlsa_usable_records") + " and on (instance, job, mx) "
                      + series("mail_dns_dane_tlsa_records") + " > 0", "{{mx}}"),
                steps=thresholds("red", (1, "green")),
            ),
            dns_stat(
                "DNSSEC validated",
                "Per name: the resolver validated the answer (AD bit) for the domain's MX and each "
                "_25._tcp TLSA name. DANE needs it: senders ignore unvalidated TLSA records.",
                Query(series("mail_dns_dnssec_validated"), "{{name}}"),
                mappings=flag(("validated", "green"), ("not validated", "orange")),
            ),
            dns_stat(
                "MTA-STS MX certificates",
                "Per MX an MTA-STS policy in mode enforce or testing covers: the certificate it "
                "shows after STARTTLS verifies (web PKI) and names it, as senders that apply the "
                "policy require (RFC 8461); invalid under enforce is MailMtaStsCertificateInvalid.",
                Query(series("mail_dns_mta_sts_mx_certificate_valid"), "{{mx}} ({{domain}})"),
                mappings=flag(("valid", "green"), ("invalid", "red")),
            ),
            dns_stat(
                "MTA-STS policy lists MX",
                "Per MX host of each domain with a valid MTA-STS policy: an mx line of the policy "
                "matches it; senders that enforce the policy refuse one it does not.",
                Query(series("mail_dns_mta_sts_mx_host_covered"), "{{mx}} ({{domain}})"),
                mappings=flag(("listed", "green"), ("not listed", "red")),
            ),
            dns_stat(
                "Failing DMARC",
                "Per domain: the share of mail receivers reported from it that neither DKIM "
                f"nor SPF aligned, over the last {CONFIG.reports_window} (reports mailbox). "
                "The reputation and reports dashboard, a click away, says who sent it.",
                Query(dmarc_failing_share(), "{{domain}}"),
                unit="percentunit", steps=DMARC_SHARE, decimals=1, links=reports_link(),
            ),
            dns_stat(
                "TLS sessions failed",
                "Per domain: the share of TLS sessions to its MX that senders reported failed "
                f"(TLS-RPT), over the last {CONFIG.reports_window}; the reputation and reports "
                "dashboard, a click away, says why.",
                Query(tls_failed_share(), "{{domain}}"),
                unit="percentunit", steps=TLS_SHARE, decimals=1, links=reports_link(),
            ),
        ],
    )  # fmt: skip
