"""Alerts on the probes: services down, logins refused, STARTTLS, certificates and TLS
versions, slow answers."""

from __future__ import annotations

from mail_exporter.probes.result import FailureReason
from mail_exporter.tls_facts import tls_version_label
from mixin.config import Config
from mixin.promql import DAY_SECONDS, OLD_TLS, PROBED, cert_days_left
from mixin.rules.alert import Alert, Example, Levels, fired, flag_alert, leveled, steady

TARGET = 'target="mx1",module="smtp_starttls",protocol="smtp",instance="mailhost:9469",job="mail"'
TARGET_LABELS = {"target": "mx1", "module": "smtp_starttls", "protocol": "smtp",
                 "instance": "mailhost:9469", "job": "mail"}  # fmt: skip

# The phase and reason of the failure, read when the alert is rendered (a probe that
# failed has one mail_probe_failure_info series: see docs/metrics.md).
FAILURE_DETAIL = (
    "{{ with printf `mail_probe_failure_info{instance=%q,job=%q,target=%q}` "
    "$labels.instance $labels.job $labels.target | query }}: {{ (index . 0).Labels.reason }} "
    "in the {{ (index . 0).Labels.phase }} phase{{ end }}"
)


def tls_version(openssl_name: str) -> tuple[str, str]:
    """One target's ``mail_tls_version_info`` for OpenSSL's name of a version, as exported."""
    label = tls_version_label(openssl_name)
    return f'mail_tls_version_info{{{TARGET},version="{label}"}}', steady(1)


def old_tls(openssl_name: str) -> Example:
    """MailTLSVersionOld firing for a version older than TLS 1.2."""
    label = tls_version_label(openssl_name)
    return Example([tls_version(openssl_name)], [fired(TARGET_LABELS, "warning", version=label)])


def probe_alerts(c: Config) -> list[Alert]:
    failure = "mail_probe_failure_info"
    auth, starttls, tls = FailureReason.AUTH, FailureReason.STARTTLS_UNAVAILABLE, FailureReason.TLS
    specific = c.matchers(f'reason=~"{auth}|{starttls}"')
    tls_failed = failure + c.matchers(f'reason="{tls}"') + " == 1"
    # A handshake that finished with a certificate that does not verify; a handshake that
    # failed leaves no TLS facts.
    unverified = f"{tls_failed} and on ({PROBED}) mail_tls_cert_verified{c.matchers()} == 0"
    success = f"mail_probe_success{{{TARGET}}}"

    def failed(phase: str, reason: str) -> tuple[str, str]:
        return f'{failure}{{{TARGET},phase="{phase}",reason="{reason}"}}', steady(1)

    verified = f"mail_tls_cert_verified{{{TARGET}}}"
    unverified_summary = "A mail server's certificate does not verify."
    unverified_description = (
        "The certificate of {{ $labels.target }} ({{ $labels.protocol }}) does not verify "
        "against the trusted CAs or does not name the server; clients will refuse or warn."
    )
    alerts = [
        Alert(
            "MailProbeDown",
            # Failures with an alert of their own (a refused login, STARTTLS missing, a
            # certificate that does not verify) are left to it: it says what is wrong.
            f"mail_probe_success{c.matchers()} == 0 unless on ({PROBED}) {failure}{specific}"
            f" unless on ({PROBED}) ({unverified})",
            "critical", "A mail service does not answer its probe.",
            "{{ $labels.protocol }} on {{ $labels.target }} ({{ $labels.module }}) has failed its "
            "probe for " + c.probe_down_for + FAILURE_DETAIL + ".",
            Example([(success, steady(0)), failed("connect", "connect")], [fired(TARGET_LABELS, "critical")]),
            Example([(success, steady(0)), failed("auth", auth)]),
            for_=c.probe_down_for,
            also=(
                Example([(success, steady(1))]),
                Example([(success, steady(0)), failed("capabilities", starttls)]),
                Example([(success, steady(0)), failed("tls_handshake", tls), (verified, steady(0))]),
                # The handshake itself failed: no certificate to blame.
                Example([(success, steady(0)), failed("tls_handshake", tls)], [fired(TARGET_LABELS, "critical")]),
                # insecure_skip_verify: an unverified certificate, then the banner timed out.
                Example([(success, steady(0)), failed("banner", "timeout"), (verified, steady(0))],
                        [fired(TARGET_LABELS, "critical")]),
            ),
        ),
        Alert(
            "MailLoginFailing", failure + c.matchers(f'reason="{auth}"') + " == 1", "critical",
            "The probe's login is refused.",
            "Login to {{ $labels.protocol }} on {{ $labels.target }} fails: users cannot log in "
            "either, or the probe's credentials changed.",
            Example([(f'{failure}{{{TARGET},phase="auth",reason="auth"}}', steady(1))],
                    [fired(TARGET_LABELS, "critical", phase="auth", reason="auth")]),
            Example([(f'{failure}{{{TARGET},phase="connect",reason="connect"}}', steady(1))]),
        ),
        Alert(
            "MailStartTLSMissing", failure + c.matchers(f'reason="{starttls}"') + " == 1",
            "critical", "STARTTLS is required but the server does not offer it.",
            "{{ $labels.target }} ({{ $labels.protocol }}) no longer offers STARTTLS: mail and "
            "logins would travel unencrypted, or something strips it on the way (a downgrade).",
            Example([(f'{failure}{{{TARGET},phase="capabilities",reason="starttls_unavailable"}}', steady(1))],
                    [fired(TARGET_LABELS, "critical", phase="capabilities", reason="starttls_unavailable")]),
            Example([(f'{failure}{{{TARGET},phase="banner",reason="timeout"}}', steady(1))]),
            for_="2m",
        ),
        flag_alert(
            c, "MailPlaintextLoginOffered", "mail_probe_plaintext_auth_offered", TARGET_LABELS,
            "warning", "The server offers login before TLS.",
            "{{ $labels.target }} ({{ $labels.protocol }}) advertises login on an unencrypted "
            "session: passwords can be sent in the clear.",
            bad=1, for_="1h",
        ),
        flag_alert(
            c, "MailCertificateNotVerified", "mail_tls_cert_verified", TARGET_LABELS, "warning",
            unverified_summary, unverified_description, for_="10m",
        ),
        Alert(
            # The module verifies (no insecure_skip_verify), so the probe fails: an outage for
            # every client that verifies too, and MailProbeDown leaves it to this alert.
            "MailCertificateNotVerified",
            f"mail_tls_cert_verified{c.matchers()} == 0 and on ({PROBED}) {tls_failed}", "critical",
            unverified_summary,
            unverified_description + " The probe fails on it: its module verifies, as clients do.",
            Example([(verified, steady(0)), failed("tls_handshake", tls)],
                    [fired(TARGET_LABELS, "warning"), fired(TARGET_LABELS, "critical")]),
            Example([(verified, steady(0))], [fired(TARGET_LABELS, "warning")]),
            for_=c.probe_down_for,
        ),
        Alert(
            "MailTLSVersionOld",
            "mail_tls_version_info" + c.matchers(OLD_TLS) + " == 1",
            "warning", "A mail server negotiates TLS older than 1.2.",
            "{{ $labels.target }} ({{ $labels.protocol }}) negotiated {{ $labels.version }}.",
            old_tls("TLSv1"),
            Example([tls_version("TLSv1.2"), tls_version("TLSv1.3")]),
            for_="1h",
            also=(old_tls("TLSv1.1"), old_tls("SSLv3")),
        ),
    ]  # fmt: skip
    alerts += leveled(
        "MailProbeSlow", "mail_probe_duration_seconds" + c.matchers() + " > {limit}",
        Levels.of_durations(c.probe_slow_warning_seconds, c.probe_slow_critical_seconds),
        f"mail_probe_duration_seconds{{{TARGET}}}", TARGET_LABELS, "A mail service answers slowly.",
        "A probe of {{ $labels.target }} ({{ $labels.protocol }}) took "
        "{{ $value | humanizeDuration }} (threshold {limit}s).", c.probe_slow_for,
    )  # fmt: skip
    warn_days, crit_days = c.cert_expiry_warning_days, c.cert_expiry_critical_days
    day = DAY_SECONDS
    alerts += leveled(
        "MailCertificateExpiring", cert_days_left(config=c) + " < {limit}",
        Levels(warn_days, crit_days, (warn_days + 30) * day, (warn_days + crit_days) / 2 * day,
               (crit_days - 1) * day),
        f"mail_tls_cert_expiry_timestamp_seconds{{{TARGET}}}", TARGET_LABELS,
        "A mail server's certificate expires soon.",
        "The certificate chain of {{ $labels.target }} ({{ $labels.protocol }}) expires in "
        '{{ $value | printf "%.1f" }} days (threshold {limit}).', "10m",
    )  # fmt: skip
    return alerts
