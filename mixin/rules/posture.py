"""Alerts on a server's security posture, from the probe options that measure it
(``tls_scan``, ``revocation``, ``smtp.relay_check``, ``smtp.enumeration_check``): old TLS
versions and weak cipher classes the server still accepts, a revoked leaf certificate or
one whose revocation cannot be checked, an intermediate about to expire, an open relay,
and addresses that VRFY or EXPN confirm.

The series exist only on modules that turn their option on, so none of these alerts fires
on a module that does not ask. Each fires per label of its gauge (a version, a cipher
class, a chain position, a command), so the notification names what to change.

The intermediate's expiry leaves the leaf (position ``0``) to MailCertificateExpiring.
That alert reads the earliest expiry of the whole chain, so an intermediate close to its
end raises both: this one says which certificate it is.
"""

from __future__ import annotations

from dataclasses import replace

from mixin.config import Config
from mixin.promql import DAY_SECONDS, OLD_TLS, chain_cert_days_left
from mixin.rules.alert import Alert, Example, Levels, fired, flag_alert, leveled, steady
from mixin.rules.probes import TARGET, TARGET_LABELS

SCANNED_VERSIONS = ("TLS 1.0", "TLS 1.1", "TLS 1.2", "TLS 1.3")
INTERMEDIATE = "Example Intermediate CA"


def _accepted(versions: dict[str, int]) -> list[tuple[str, str]]:
    """A scan's ``mail_tls_version_accepted`` series: each version accepted (1) or not (0)."""
    return [
        (f'mail_tls_version_accepted{{{TARGET},version="{version}"}}', steady(accepted))
        for version, accepted in versions.items()
    ]


def _weak_versions(c: Config) -> Alert:
    return Alert(
        "MailTLSWeakProtocolAccepted",
        "mail_tls_version_accepted" + c.matchers(OLD_TLS) + " == 1",
        "warning",
        "A mail server still accepts TLS older than 1.2.",
        "{{ $labels.target }} ({{ $labels.protocol }}) still completes a handshake at "
        "{{ $labels.version }}.",
        Example(
            _accepted(dict(zip(SCANNED_VERSIONS, (1, 1, 1, 1), strict=True))),
            [fired(TARGET_LABELS, "warning", version=v) for v in ("TLS 1.0", "TLS 1.1")],
        ),
        Example(_accepted(dict(zip(SCANNED_VERSIONS, (0, 0, 1, 1), strict=True)))),
        for_=c.posture_for,
    )


def _chain_expiring(c: Config) -> list[Alert]:
    def chain(position: str, subject_cn: str) -> tuple[str, dict[str, str]]:
        labels = {**TARGET_LABELS, "position": position, "subject_cn": subject_cn}
        selector = f'{TARGET},position="{position}",subject_cn="{subject_cn}"'
        return f"mail_tls_chain_cert_expiry_timestamp_seconds{{{selector}}}", labels

    warn, crit = c.chain_cert_expiry_warning_days, c.chain_cert_expiry_critical_days
    day = DAY_SECONDS
    intermediate, labels = chain("1", INTERMEDIATE)
    leaf, _ = chain("0", "mail.example.com")
    alerts = leveled(
        "MailCertificateChainExpiring",
        chain_cert_days_left('position!="0"', config=c) + " < {limit}",
        Levels(warn, crit, (warn + 30) * day, (warn + crit) / 2 * day, (crit - 1) * day),
        intermediate,
        labels,
        "An intermediate certificate a mail server presents expires soon.",
        "{{ $labels.subject_cn }}, certificate {{ $labels.position }} of the chain that "
        "{{ $labels.target }} ({{ $labels.protocol }}) presents, expires in "
        '{{ $value | printf "%.1f" }} days (threshold {limit}).',
        "10m",
    )
    # The leaf expiring is MailCertificateExpiring's.
    leaf_only = Example(
        [(leaf, steady((crit - 1) * day)), (intermediate, steady((warn + 30) * day))]
    )
    return [replace(alert, also=(leaf_only,)) for alert in alerts]


def _revocation_unknown(c: Config) -> Alert:
    hours = c.revocation_check_failing_hours
    minutes = hours * 60 + 30

    def checks(**methods: int) -> list[tuple[str, str]]:
        metric = "mail_tls_revocation_check_success"
        return [
            (f'{metric}{{{TARGET},method="{method}"}}', steady(ok, minutes + 30))
            for method, ok in methods.items()
        ]

    return Alert(
        "MailRevocationCheckFailing",
        # One method's answer settles it: revocation is unknown only while every method fails.
        f"max without (method) (mail_tls_revocation_check_success{c.matchers()}) == 0",
        "warning",
        "A mail server's certificate cannot be checked for revocation.",
        "No revocation check (CRL, OCSP, staple) of the certificate of {{ $labels.target }} "
        "({{ $labels.protocol }}) has given an answer for " + f"{hours}h" + ": a revoked "
        "certificate would go unnoticed.",
        Example(checks(crl=0, ocsp=0), [fired(TARGET_LABELS, "warning")]),
        Example(checks(crl=0, ocsp=1)),
        for_=f"{hours}h",
        eval_minutes=minutes,
        also=(Example(checks(ocsp=0), [fired(TARGET_LABELS, "warning")]),),
    )


def posture_alerts(c: Config) -> list[Alert]:
    return [
        _weak_versions(c),
        flag_alert(
            c, "MailTLSWeakCipherAccepted", "mail_tls_weak_cipher_accepted",
            {**TARGET_LABELS, "class": "cbc_sha1"}, "warning",
            "A mail server still accepts a weak TLS cipher class.",
            "{{ $labels.target }} ({{ $labels.protocol }}) completes a handshake offered only "
            "{{ $labels.class }} ciphers.",
            bad=1, for_=c.posture_for,
        ),
        flag_alert(
            c, "MailCertificateRevoked", "mail_tls_cert_revoked", TARGET_LABELS, "critical",
            "A mail server presents a revoked certificate.",
            "The CA has revoked the certificate of {{ $labels.target }} ({{ $labels.protocol }}): "
            "clients that check revocation refuse it.",
            bad=1, for_=c.cert_revoked_for,
        ),
        _revocation_unknown(c),
        *_chain_expiring(c),
        flag_alert(
            c, "MailOpenRelay", "mail_smtp_open_relay", TARGET_LABELS, "critical",
            "A mail server relays for anyone.",
            "{{ $labels.target }} accepted a recipient outside its domains without a login: "
            "anyone can send spam through it, and blocklists will follow.",
            bad=1, for_=c.open_relay_for,
        ),
        flag_alert(
            c, "MailUserEnumeration", "mail_smtp_user_enumeration",
            {**TARGET_LABELS, "command": "VRFY"}, "warning",
            "A mail server confirms addresses to anyone.",
            "{{ $labels.target }} answers {{ $labels.command }} for an existing address: "
            "spammers and password guessers can list its users.",
            bad=1, for_=c.posture_for,
        ),
    ]  # fmt: skip
