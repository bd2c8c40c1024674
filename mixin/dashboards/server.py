"""The ``mail-server`` dashboard: one server's probes in detail, chosen with the ``target``
variable: where the time goes, why probes fail, its TLS, its security posture and the
mailboxes its module reads (``imap.mailboxes``: counts, quota, the newest message's age).

The posture row shows what the probe options ``tls_scan``, ``revocation``,
``smtp.relay_check`` and ``smtp.enumeration_check`` measure; on a module without them its
panels stay empty. Accepted TLS versions read as one band per version: an old version the
server accepts is the finding, a new one it refuses only a fact, so the query gives the two
kinds different values to colour.
"""

from __future__ import annotations

from typing import Any

from mixin.config import CONFIG
from mixin.dashboards.shared import (
    CERT_DAYS,
    PLAINTEXT_LOGIN,
    PROBE_SLOW,
    STARTTLS,
    TARGET,
    UP_DOWN,
    VERIFIED,
)
from mixin.grafana import (
    DAYS,
    NAMED,
    Json,
    Panel,
    Query,
    Row,
    colored_cells,
    column,
    dashboard,
    flag,
    higher_is_worse,
    label_variable,
    lower_is_worse,
    stat,
    state_timeline,
    states,
    table,
    timeseries,
)
from mixin.promql import (
    CURRENT_TLS,
    OLD_TLS,
    age,
    cert_days_left,
    chain_cert_days_left,
    increase,
    quantile,
    series,
    sum_by,
)

UID = "mail-server"
SERIES_TARGET = "${__field.labels.target}"
CELL_VALUE = "${__value.raw}"

# An old version accepted counts 2, a current one 1, a refused one 0 (see the docstring).
WEAK_ACCEPTED = 2
VERSION_ACCEPTED = states(
    (WEAK_ACCEPTED, "accepted (too old)", "red"), (1, "accepted", "green"), (0, "refused", "blue")
)
WEAK_CIPHER = flag(("accepted", "red"), ("refused", "green"))
REVOKED = flag(("revoked", "red"), ("good", "green"))
CHECK_ANSWERED = flag(("answered", "green"), ("failed", "orange"))
OPEN_RELAY = flag(("open relay", "red"), ("closed", "green"))
AUTH_RELAY = flag(("allowed", "green"), ("refused", "orange"))
ENUMERATION = flag(("answers", "orange"), ("refused", "green"))
NAME_COVERED = flag(("covered", "green"), ("not covered", "red"))
CHAIN_DAYS = lower_is_worse(
    CONFIG.chain_cert_expiry_critical_days, CONFIG.chain_cert_expiry_warning_days
)


def server_link(target: str = SERIES_TARGET) -> list[Json]:
    """A data link to this dashboard for the target a series (or, ``CELL_VALUE``, a table
    cell) names, keeping the data source and time range."""
    url = f"/d/{UID}/{UID}?var-target={target}&${{datasource:queryparam}}&${{__url_time_range}}"
    return [{"title": f"Open {target}", "url": url}]


def _now(
    title: str, description: str, expr: str, legend: str = "{{target}}", **options: Any
) -> Panel:
    """A fact of each picked target's last probe, named by the target (and by the fact's
    own label where ``legend`` adds it)."""
    return stat(title, description, Query(expr, legend), text=NAMED, **options)


def _server_now() -> Row:
    return Row(
        "Now",
        [
            _now(
                "Status",
                "The last probe's verdict.",
                series("mail_probe_success", TARGET),
                mappings=UP_DOWN,
            ),
            _now(
                "Since last success",
                "Time since a probe of this target last passed every step.",
                age("mail_probe_last_success_timestamp_seconds", TARGET),
                unit="s",
            ),
            _now(
                "Probe duration",
                "Wall time of the last probe.",
                series("mail_probe_duration_seconds", TARGET),
                unit="s",
                steps=PROBE_SLOW,
            ),
            _now(
                "Certificate days left",
                "Days until the earliest certificate of the presented chain expires.",
                cert_days_left(TARGET),
                unit=DAYS,
                steps=CERT_DAYS,
                decimals=0,
            ),
            _now(
                "Certificate",
                "Whether the chain verified and names the server.",
                series("mail_tls_cert_verified", TARGET),
                mappings=VERIFIED,
            ),
            stat(
                "TLS version",
                "The TLS version the last session negotiated.",
                Query(series("mail_tls_version_info", TARGET), "{{target}}: {{version}}"),
                text="name",
            ),
            _now(
                "STARTTLS",
                "On plaintext sessions: whether the server offered STARTTLS (STLS).",
                series("mail_probe_starttls_offered", TARGET),
                mappings=STARTTLS,
            ),
            _now(
                "Login before TLS",
                "On plaintext sessions: whether the server offered a login before TLS.",
                series("mail_probe_plaintext_auth_offered", TARGET),
                mappings=PLAINTEXT_LOGIN,
            ),
        ],
    )


def _server_timing() -> Row:
    return Row(
        "Timing",
        [
            timeseries(
                "Phase breakdown",
                "Where the last probe spent its time, stacked: resolve, connect, TLS handshake, "
                "banner, capabilities, STARTTLS, login and quit.",
                Query(series("mail_probe_phase_duration_seconds", TARGET), "{{target}} {{phase}}"),
                unit="s",
                stack=True,
            ),
            timeseries(
                "Duration and latency percentiles",
                "The last probe's duration and the 95th and 99th percentile of recent probes.",
                Query(series("mail_probe_duration_seconds", TARGET), "last {{target}}"),
                Query(
                    quantile(0.95, "mail_probe_latency_seconds", "target", TARGET),
                    "p95 {{target}}",
                ),
                Query(
                    quantile(0.99, "mail_probe_latency_seconds", "target", TARGET),
                    "p99 {{target}}",
                ),
                unit="s",
                steps=PROBE_SLOW,
            ),
        ],
    )


def _server_failures() -> Row:
    return Row(
        "Failures",
        [
            state_timeline(
                "Status history",
                "The probe's verdict over time.",
                Query(series("mail_probe_success", TARGET), "{{target}}"),
                mappings=UP_DOWN,
                height=5,
            ),
            timeseries(
                "Failures by reason",
                "Failed probes per interval by reason: resolve, connect, timeout, tls, banner, "
                "protocol, starttls_unavailable, auth, rejected.",
                Query(
                    sum_by(
                        "target, reason",
                        increase("mail_probe_failures_total", TARGET),
                    )
                    + " > 0",
                    "{{target}} {{reason}}",
                ),
                bars=True,
            ),
            table(
                "Last failure",
                "While the last probe fails: the phase it stopped in and why.",
                Query(f"{series('mail_probe_failure_info', TARGET)} == 1"),
                columns={
                    "target": "Target",
                    "protocol": "Protocol",
                    "phase": "Phase",
                    "reason": "Reason",
                },
                hidden=["Value"],
                width=12,
            ),
        ],
    )


def _server_tls() -> Row:
    return Row(
        "TLS",
        [
            table(
                "TLS facts",
                "The last session's TLS: version, cipher suite, verification and the "
                "certificate's validity window.",
                Query(series("mail_tls_version_info", TARGET)),
                Query(series("mail_tls_cipher_info", TARGET)),
                Query(series("mail_tls_cert_verified", TARGET)),
                Query(f"{series('mail_tls_cert_not_before_timestamp_seconds', TARGET)} * 1000"),
                Query(f"{series('mail_tls_cert_expiry_timestamp_seconds', TARGET)} * 1000"),
                Query(cert_days_left(TARGET)),
                columns={
                    "target": "Target",
                    "protocol": "Protocol",
                    "version": "TLS",
                    "cipher": "Cipher",
                    "Value #C": "Certificate",
                    "Value #D": "Valid from",
                    "Value #E": "Expires",
                    "Value #F": "Days left",
                },
                hidden=["Value #A", "Value #B"],
                overrides=[
                    colored_cells("Certificate", mappings=VERIFIED),
                    column("Valid from", unit="dateTimeAsIso"),
                    column("Expires", unit="dateTimeAsIso"),
                    colored_cells("Days left", unit=DAYS, decimals=0, thresholds=CERT_DAYS),
                ],
                height=6,
            ),
        ],
    )


def _server_posture() -> Row:
    accepted = "mail_tls_version_accepted"
    return Row(
        "Security posture",
        [
            state_timeline(
                "Accepted TLS versions",
                "From the cached tls_scan: whether the server completes a handshake offered only "
                "this version. Red: a version older than TLS 1.2 is still accepted.",
                Query(
                    f"{series(accepted, TARGET, OLD_TLS)} * {WEAK_ACCEPTED}",
                    "{{target}} {{version}}",
                ),
                Query(
                    series(accepted, TARGET, CURRENT_TLS),
                    "{{target}} {{version}}",
                ),
                mappings=VERSION_ACCEPTED,
                width=12,
            ),
            state_timeline(
                "Weak cipher classes",
                "From the cached tls_scan: whether the server completes a TLS 1.2 handshake "
                "offered only this weak class (RSA key exchange, CBC with SHA-1, 3DES, RC4); "
                "classes the exporter's OpenSSL cannot offer are missing.",
                Query(series("mail_tls_weak_cipher_accepted", TARGET), "{{target}} {{class}}"),
                mappings=WEAK_CIPHER,
                width=12,
            ),
            table(
                "Certificate chain",
                "Every certificate the server presents, the leaf at position 0, and the days "
                "until each expires: an intermediate that expires breaks the chain although "
                "the leaf is valid.",
                Query(chain_cert_days_left(TARGET)),
                Query(f"{series('mail_tls_chain_cert_expiry_timestamp_seconds', TARGET)} * 1000"),
                columns={
                    "target": "Target",
                    "protocol": "Protocol",
                    "position": "Position",
                    "subject_cn": "Subject",
                    "Value #A": "Days left",
                    "Value #B": "Expires",
                },
                overrides=[
                    colored_cells("Days left", unit=DAYS, decimals=0, thresholds=CHAIN_DAYS),
                    column("Expires", unit="dateTimeAsIso"),
                ],
                width=12,
                height=7,
            ),
            table(
                "Leaf certificate",
                "Who the leaf certificate names and who issued it, its key and signature, "
                "and whether its names cover the probed host.",
                Query(series("mail_tls_cert_info", TARGET)),
                Query(series("mail_tls_cert_key_size", TARGET)),
                Query(series("mail_tls_cert_san_entries", TARGET)),
                Query(series("mail_tls_cert_name_covered", TARGET)),
                columns={
                    "target": "Target",
                    "protocol": "Protocol",
                    "subject_cn": "Subject",
                    "issuer_cn": "Issuer",
                    "key_type": "Key",
                    "Value #B": "Key bits",
                    "signature_algorithm": "Signature",
                    "Value #C": "Names",
                    "Value #D": "Probed name",
                    "serial": "Serial",
                    "sha256_fingerprint": "SHA-256 fingerprint",
                },
                hidden=["Value #A"],
                overrides=[colored_cells("Probed name", mappings=NAME_COVERED)],
                width=12,
                height=7,
            ),
            _now(
                "Revocation",
                "Whether a CRL, OCSP or staple check found the leaf revoked; empty while no check "
                "answers.",
                series("mail_tls_cert_revoked", TARGET),
                mappings=REVOKED,
                width=4,
            ),
            _now(
                "Revocation checks",
                "Whether each revocation method gave an answer; a failure is never read as "
                "good or revoked.",
                series("mail_tls_revocation_check_success", TARGET),
                "{{target}} {{method}}",
                mappings=CHECK_ANSWERED,
                width=4,
            ),
            _now(
                "Open relay",
                "Whether the server accepted, without a login, a recipient outside its domains.",
                series("mail_smtp_open_relay", TARGET),
                mappings=OPEN_RELAY,
                width=4,
            ),
            _now(
                "Authenticated relay",
                "Whether the same recipient is accepted after the module's login, as users "
                "sending out need.",
                series("mail_smtp_auth_relay_allowed", TARGET),
                mappings=AUTH_RELAY,
                width=4,
            ),
            _now(
                "User enumeration",
                "Whether VRFY or EXPN confirm the configured address to anyone.",
                series("mail_smtp_user_enumeration", TARGET),
                "{{target}} {{command}}",
                mappings=ENUMERATION,
                width=4,
            ),
            _now(
                "Login before STARTTLS",
                "On plaintext sessions: whether the server offered a login before TLS.",
                series("mail_probe_plaintext_auth_offered", TARGET),
                mappings=PLAINTEXT_LOGIN,
                width=4,
            ),
        ],
    )


def _server_mailboxes() -> Row:
    """The mailboxes the module reads (``imap.mailboxes``); empty for other modules."""
    newest = "mail_mailbox_newest_message_timestamp_seconds"
    used = (
        f"{series('mail_mailbox_quota_usage', TARGET)}"
        f" / {series('mail_mailbox_quota_limit', TARGET)}"
    )
    return Row(
        "Mailbox store",
        [
            table(
                "Mailboxes",
                "The configured mailboxes: messages, unseen, size, how long ago the newest "
                "arrived and how recent it should be (newest_max_age).",
                Query(series("mail_mailbox_messages", TARGET)),
                Query(series("mail_mailbox_unseen_messages", TARGET)),
                Query(series("mail_mailbox_size_bytes", TARGET)),
                Query(age(newest, TARGET)),
                Query(series("mail_mailbox_newest_max_age_seconds", TARGET)),
                columns={
                    "target": "Target",
                    "mailbox": "Mailbox",
                    "kind": "Kind",
                    "Value #A": "Messages",
                    "Value #B": "Unseen",
                    "Value #C": "Size",
                    "Value #D": "Newest message age",
                    "Value #E": "Expected within",
                },
                overrides=[
                    column("Size", unit="bytes"),
                    column("Newest message age", unit="s"),
                    column("Expected within", unit="s"),
                ],
                height=7,
            ),
            timeseries(
                "Quota used",
                "Usage over limit of each mailbox's quota root, storage and messages; the "
                "dashed line is MailboxQuotaNearlyFull's threshold.",
                Query(used, "{{target}} {{mailbox}} {{resource}}"),
                unit="percentunit",
                steps=higher_is_worse(CONFIG.mailbox_quota_warning_ratio, 1.0),
            ),
            timeseries(
                "Newest message age",
                "How long ago each mailbox's newest message arrived: an archive or shared "
                "mailbox that should keep receiving climbs here when its feed stops.",
                Query(age(newest, TARGET), "{{target}} {{mailbox}}"),
                unit="s",
            ),
        ],
    )


def server_drilldown() -> Json:
    return dashboard(
        UID,
        "Mail: server drill-down",
        "One server's probes in detail: where the time goes, why probes fail, its TLS and "
        "its security posture.",
        [
            _server_now(),
            _server_timing(),
            _server_failures(),
            _server_tls(),
            _server_posture(),
            _server_mailboxes(),
        ],  # fmt: skip
        # One server at first (the first target), more when picked.
        [label_variable("target", "Target", "mail_probe_success", include_all=False)],
    )
