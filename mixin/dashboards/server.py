"""The ``mail-server`` dashboard: one server's probes in detail, chosen with the ``target``
variable: where the time goes, why probes fail, and its TLS."""

from __future__ import annotations

from typing import Any

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
    label_variable,
    stat,
    state_timeline,
    table,
    timeseries,
)
from mixin.promql import age, cert_days_left, increase, quantile, series, sum_by

UID = "mail-server"
SERIES_TARGET = "${__field.labels.target}"
CELL_VALUE = "${__value.raw}"


def server_link(target: str = SERIES_TARGET) -> list[Json]:
    """A data link to this dashboard for the target a series (or, ``CELL_VALUE``, a table
    cell) names, keeping the data source and time range."""
    url = f"/d/{UID}/{UID}?var-target={target}&${{datasource:queryparam}}&${{__url_time_range}}"
    return [{"title": f"Open {target}", "url": url}]


def _now(title: str, description: str, expr: str, **options: Any) -> Panel:
    """A fact of each picked target's last probe, named by the target."""
    return stat(title, description, Query(expr, "{{target}}"), text=NAMED, **options)


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


def server_drilldown() -> Json:
    return dashboard(
        UID,
        "Mail: server drill-down",
        "One server's probes in detail: where the time goes, why probes fail, and its TLS.",
        [_server_now(), _server_timing(), _server_failures(), _server_tls()],
        # One server at first (the first target), more when picked.
        [label_variable("target", "Target", "mail_probe_success", include_all=False)],
    )
