"""The ``mail-overview`` dashboard: the whole fleet at a glance (probes, TLS, queues, round
trip, DNS and reputation, the exporters themselves).

Exchange's transport queues need no panels of their own: the shipped rules record them as
``mail_queue_messages{mta="exchange"}`` (:mod:`mixin.rules.exchange`), so the queue panels
show them with the Postfix, Exim and qmail queues."""

from __future__ import annotations

from mixin.config import CONFIG
from mixin.dashboards.overview_dns import dns_row
from mixin.dashboards.server import CELL_VALUE, server_link
from mixin.dashboards.shared import (
    CERT_DAYS,
    PLAINTEXT_LOGIN,
    PROBE_SLOW,
    STARTTLS,
    UP_DOWN,
    VERIFIED,
    broken,
)
from mixin.grafana import (
    DAYS,
    NAMED,
    Json,
    Panel,
    Query,
    Row,
    any_is_bad,
    bargauge,
    colored_cells,
    column,
    dashboard,
    flag,
    higher_is_worse,
    stat,
    state_timeline,
    table,
    thresholds,
    timeseries,
)
from mixin.promql import (
    PROBE_P95_RULE,
    age,
    cert_days_left,
    equals,
    increase,
    quantile,
    series,
    sum_by,
)

DEFERRED = 'queue="deferred"'

OK_FAILED = flag(("ok", "green"), ("failed", "red"))
ROUNDTRIP_SLOW = higher_is_worse(
    CONFIG.roundtrip_slow_warning_seconds, CONFIG.roundtrip_slow_critical_seconds
)
OLDEST_MESSAGE = higher_is_worse(
    CONFIG.queue_oldest_warning_seconds, CONFIG.queue_oldest_critical_seconds
)
DEFERRED_QUEUE = higher_is_worse(CONFIG.queue_deferred_warning, CONFIG.queue_deferred_critical)


def _fleet_summary() -> Row:
    return Row(
        "Now",
        [
            broken(
                "Probes failing",
                "Targets whose last probe failed a step (any protocol).",
                f"{series('mail_probe_success')} == 0",
            ),
            broken(
                "Certificates expiring",
                f"Certificates with less than {CONFIG.cert_expiry_warning_days} days left.",
                f"{cert_days_left()} < {CONFIG.cert_expiry_warning_days}",
                "orange",
            ),
            broken(
                "Certificates not verified",
                "Chains that did not verify or do not name the server.",
                f"{series('mail_tls_cert_verified')} == 0",
            ),
            broken(
                "TLS older than 1.2",
                "Sessions that negotiated TLS 1.0, 1.1 or older.",
                series("mail_tls_version_info", 'version!~"TLS 1.[23]"'),
            ),
            broken(
                "STARTTLS missing",
                "Plaintext sessions whose server did not offer STARTTLS (STLS for POP3).",
                f"{series('mail_probe_starttls_offered')} == 0",
            ),
            broken(
                "Login before TLS",
                "Servers that offer a login on an unencrypted channel: passwords in clear.",
                f"{series('mail_probe_plaintext_auth_offered')} == 1",
            ),
            broken(
                "Round trips failing",
                "Routes whose last test message did not arrive in time.",
                f"{series('mail_roundtrip_success')} == 0",
            ),
            stat(
                "Deferred messages",
                "Messages in every Postfix deferred queue together; colours at "
                f"{CONFIG.queue_deferred_warning}/{CONFIG.queue_deferred_critical}.",
                Query(f"sum({series('mail_queue_messages', DEFERRED)}) or vector(0)"),
                steps=DEFERRED_QUEUE,
            ),
        ],
    )


def _fleet_probes() -> Row:
    return Row(
        "Probes",
        [
            state_timeline(
                "Up/down by server and protocol",
                "Each scheduled target's probe result over time: green when every step passed. "
                "Click a band to open the server's drill-down.",
                Query(series("mail_probe_success"), "{{target}} {{protocol}}"),
                mappings=UP_DOWN,
                links=server_link(),
            ),
            table(
                "Servers",
                "One row per target: last result, duration, certificate, TLS version and the "
                "login safety flags (STARTTLS and login before TLS only on plaintext sessions).",
                Query(series("mail_probe_success")),
                Query(series("mail_probe_duration_seconds")),
                Query(cert_days_left()),
                Query(series("mail_tls_cert_verified")),
                Query(series("mail_tls_version_info")),
                Query(series("mail_probe_starttls_offered")),
                Query(series("mail_probe_plaintext_auth_offered")),
                columns={
                    "target": "Target",
                    "protocol": "Protocol",
                    "module": "Module",
                    "instance": "Exporter",
                    "Value #A": "Status",
                    "Value #B": "Duration",
                    "Value #C": "Certificate days left",
                    "Value #D": "Certificate",
                    "version": "TLS",
                    "Value #F": "STARTTLS",
                    "Value #G": "Login",
                },
                hidden=["Value #E"],
                overrides=[
                    colored_cells("Status", mappings=UP_DOWN),
                    colored_cells("Duration", unit="s", thresholds=PROBE_SLOW),
                    colored_cells(
                        "Certificate days left", unit=DAYS, decimals=0, thresholds=CERT_DAYS
                    ),
                    colored_cells("Certificate", mappings=VERIFIED),
                    colored_cells("STARTTLS", mappings=STARTTLS),
                    colored_cells("Login", mappings=PLAINTEXT_LOGIN),
                    column("Target", links=server_link(CELL_VALUE)),
                ],
                height=10,
            ),
            timeseries(
                "Probe duration",
                "Wall time of each target's last probe, resolve to quit. Dashed lines: "
                f"{CONFIG.probe_slow_warning_seconds} s warning, "
                f"{CONFIG.probe_slow_critical_seconds} s critical.",
                Query(series("mail_probe_duration_seconds"), "{{target}} {{protocol}}"),
                unit="s",
                steps=PROBE_SLOW,
                links=server_link(),
            ),
            timeseries(
                "Probe latency percentiles by protocol",
                "Median and 95th percentile of all scheduled probes' durations per protocol, "
                "from the mail_probe_latency_seconds histogram.",
                Query(quantile(0.5, "mail_probe_latency_seconds", "protocol"), "p50 {{protocol}}"),
                Query(quantile(0.95, "mail_probe_latency_seconds", "protocol"), "p95 {{protocol}}"),
                unit="s",
                steps=PROBE_SLOW,
            ),
            bargauge(
                "Certificate days left",
                "Days until the earliest certificate in each presented chain expires, soonest "
                f"first; orange under {CONFIG.cert_expiry_warning_days}, red under "
                f"{CONFIG.cert_expiry_critical_days}. Shown even when verification fails.",
                Query(f"sort({cert_days_left()})", "{{target}} {{protocol}}", instant=True),
                unit=DAYS,
                steps=CERT_DAYS,
                decimals=0,
            ),
            bargauge(
                "Slowest targets (p95 over 1 h)",
                "95th percentile of each target's probe durations over the last hour, slowest "
                f"first, from the recording rule {PROBE_P95_RULE}.",
                Query(
                    f"sort_desc({series(PROBE_P95_RULE)})",
                    "{{target}} {{protocol}}",
                    instant=True,
                ),
                unit="s",
                steps=PROBE_SLOW,
            ),
        ],
    )


QUEUE_LEGEND = "{{instance}} {{mta_instance}} {{queue}}"


def _postfix_queue(queue: str, warning: int, critical: int) -> Panel:
    """The messages in each Postfix ``queue`` now, coloured at its thresholds."""
    return stat(
        f"{queue.capitalize()} queue",
        f"Messages in each {queue} queue now (Postfix; Exchange's recorded from "
        f"windows_exporter); colours at Postfix's {warning}/{critical}.",
        Query(series("mail_queue_messages", equals("queue", queue)), "{{mta_instance}}"),
        steps=higher_is_worse(warning, critical),
        text=NAMED,
        width=6,
        height=8,
    )


def _fleet_queues() -> Row:
    return Row(
        "Queues",
        [
            timeseries(
                "Queue sizes",
                "Messages in every queue of every MTA (Postfix maildrop, incoming, active, "
                "deferred, hold; Exim input; qmail queue and todo; Exchange active, deferred, "
                "unreachable, poison, recorded from windows_exporter).",
                Query(series("mail_queue_messages"), QUEUE_LEGEND),
            ),
            _postfix_queue(
                "deferred", CONFIG.queue_deferred_warning, CONFIG.queue_deferred_critical
            ),
            _postfix_queue("active", CONFIG.queue_active_warning, CONFIG.queue_active_critical),
            timeseries(
                "Oldest message age",
                "Age of the oldest message in each queue, from its recorded arrival time; "
                "0 when the queue is empty.",
                Query(series("mail_queue_oldest_message_age_seconds"), QUEUE_LEGEND),
                unit="s",
                steps=OLDEST_MESSAGE,
            ),
            timeseries(
                "Deferred recipients by reason",
                "Recipients waiting in the deferred queue by the class of their last delay "
                "reason: one reason dominating points at one cause (DNS, TLS, a refusing peer).",
                Query(
                    series("mail_queue_deferred_recipients"),
                    "{{instance}} {{mta_instance}} {{reason}}",
                ),
                stack=True,
            ),
            bargauge(
                "Top deferred domains",
                "Destination domains with the most deferred recipients now: is it one "
                "destination or the whole server?",
                Query(
                    f"sort_desc(topk(10, {series('mail_queue_deferred_domain_recipients')}))",
                    "{{mta_instance}} {{domain}}",
                    instant=True,
                ),
                steps=DEFERRED_QUEUE,
            ),
            timeseries(
                "Queue size in bytes",
                "Total size of the messages in each queue.",
                Query(series("mail_queue_size_bytes"), QUEUE_LEGEND),
                unit="bytes",
                width=18,
            ),
            stat(
                "Frozen messages (Exim)",
                "Messages Exim has frozen in each spool: they wait for an admin.",
                Query(series("mail_queue_frozen_messages"), "{{mta_instance}}"),
                steps=any_is_bad("orange"),
                text=NAMED,
                width=6,
                height=8,
            ),
        ],
    )


def _fleet_roundtrip() -> Row:
    return Row(
        "Round trip",
        [
            state_timeline(
                "Round trip status",
                "Whether each route's test message arrived in its mailbox in time.",
                Query(series("mail_roundtrip_success"), "{{route}}"),
                mappings=OK_FAILED,
                height=6,
            ),
            timeseries(
                "Round trip duration",
                "Start of sending to the message seen in the mailbox, last success per route. "
                f"Dashed lines: {CONFIG.roundtrip_slow_warning_seconds} s and "
                f"{CONFIG.roundtrip_slow_critical_seconds} s.",
                Query(series("mail_roundtrip_duration_seconds"), "{{route}}"),
                unit="s",
                steps=ROUNDTRIP_SLOW,
            ),
            timeseries(
                "Delivery time percentiles",
                "Median and 95th percentile of every test message's delivery time per route.",
                Query(quantile(0.5, "mail_roundtrip_delivery_seconds", "route"), "p50 {{route}}"),
                Query(quantile(0.95, "mail_roundtrip_delivery_seconds", "route"), "p95 {{route}}"),
                unit="s",
                steps=ROUNDTRIP_SLOW,
            ),
            stat(
                "Since last success",
                "Time since each route last delivered a test message in time; red after "
                f"{CONFIG.roundtrip_stale_seconds} s.",
                Query(age("mail_roundtrip_last_success_timestamp_seconds"), "{{route}}"),
                unit="s",
                steps=thresholds("green", (CONFIG.roundtrip_stale_seconds, "red")),
                text=NAMED,
                width=12,
                height=8,
            ),
            timeseries(
                "Round trip failures",
                "Failed round trips per interval by the stage that failed (send, send_auth, "
                "receive, receive_auth, timeout, cleanup), messages that arrived after their "
                "timeout, and messages delivered to the junk mailbox.",
                Query(
                    sum_by("route, stage", increase("mail_roundtrip_failures_total")) + " > 0",
                    "{{route}} {{stage}}",
                ),
                Query(
                    sum_by("route", increase("mail_roundtrip_late_arrivals_total")) + " > 0",
                    "{{route}} arrived late",
                ),
                Query(
                    sum_by("route", increase("mail_roundtrip_junk_total")) + " > 0",
                    "{{route}} in junk",
                ),
                bars=True,
            ),
            timeseries(
                "Delay per hop",
                "Delay each server added to the last message seen in time, from its Received "
                "headers (whole seconds: fast hops show 0); hop 1 is the first server.",
                Query(series("mail_roundtrip_hop_delay_seconds"), "{{route}} hop {{hop}}"),
                unit="s",
                stack=True,
                width=24,
            ),
        ],
    )


def _fleet_exporters() -> Row:
    return Row(
        "The exporters themselves",
        [
            broken(
                "Collectors failing",
                "Collectors (queues, host, logs, …) whose last scrape failed: their figures "
                "are missing, not zero.",
                f"{series('mail_exporter_collector_success')} == 0",
                width=4,
            ),
            stat(
                "Config reload",
                "Whether each exporter's last configuration reload worked (a failed one keeps "
                "the old configuration running).",
                Query(series("mail_exporter_config_last_reload_successful"), "{{instance}}"),
                mappings=OK_FAILED,
                text=NAMED,
                width=8,
            ),
            table(
                "Versions",
                "Each exporter's version and Python, and when its configuration was loaded.",
                Query(series("mail_exporter_build_info")),
                Query(
                    f"{series('mail_exporter_config_last_reload_success_timestamp_seconds')} * 1000"
                ),
                columns={
                    "instance": "Exporter",
                    "version": "Version",
                    "python_version": "Python",
                    "Value #B": "Config loaded",
                },
                hidden=["Value #A"],
                overrides=[column("Config loaded", unit="dateTimeAsIso")],
                width=12,
                height=4,
            ),
            timeseries(
                "Collector scrape time",
                "How long each collector took at each scrape.",
                Query(
                    series("mail_exporter_collector_duration_seconds"), "{{instance}} {{collector}}"
                ),
                unit="s",
                width=24,
            ),
        ],
        collapsed=True,
    )


def fleet_overview() -> Json:
    return dashboard(
        "mail-overview",
        "Mail: fleet overview",
        "Every mail server at a glance: protocols up or down, latency, TLS and certificates, "
        "queues (Exchange's too, from windows_exporter), round trip, and the exporters' health.",
        [
            _fleet_summary(),
            _fleet_probes(),
            _fleet_queues(),
            _fleet_roundtrip(),
            dns_row(),
            _fleet_exporters(),
        ],
    )
