"""Prometheus alert and recording rules for mail_exporter, each alert with its own test case.

Every alert is an :class:`Alert`: its expression, ``for``, severity, a one-line summary,
a templated description, and two examples: input series under which it fires and
under which it stays quiet. :func:`rules_file` renders the rules and :func:`tests_file`
the ``promtool test rules`` cases, so no alert ships untested. Thresholds and
selectors come from :mod:`mixin.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mail_exporter.probes.result import FailureReason
from mail_exporter.tls_facts import tls_version_label
from mixin.config import CONFIG, Config

RUNBOOK = "docs/runbook.md"
RULES_FILE = "mail_exporter.rules.yml"

TARGET = 'target="mx1",module="smtp_starttls",protocol="smtp",instance="mailhost:9469",job="mail"'
TARGET_LABELS = {"target": "mx1", "module": "smtp_starttls", "protocol": "smtp",
                 "instance": "mailhost:9469", "job": "mail"}  # fmt: skip
HOST = 'instance="mailhost:9469",job="mail"'
HOST_LABELS = {"instance": "mailhost:9469", "job": "mail"}


@dataclass(frozen=True)
class Example:
    """Input series (promtool ``input_series``) and the labels the alert fires with, if any."""

    series: list[tuple[str, str]]
    alerts: list[dict[str, str]] = field(default_factory=list)  # labels of each firing alert


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    severity: str
    summary: str
    description: str
    fires: Example
    quiet: Example
    for_: str = "5m"
    eval_minutes: int = 90
    labels: dict[str, str] = field(default_factory=dict)
    # More promtool cases, each firing or quiet as its alerts say: the expression's edges.
    also: tuple[Example, ...] = ()

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, **self.labels},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{RUNBOOK}#{self.name.lower()}",
            },
        }


# The phase and reason of the failure, read when the alert is rendered (a probe that
# failed has one mail_probe_failure_info series: see docs/metrics.md).
FAILURE_DETAIL = (
    "{{ with printf `mail_probe_failure_info{instance=%q,job=%q,target=%q}` "
    "$labels.instance $labels.job $labels.target | query }}: {{ (index . 0).Labels.reason }} "
    "in the {{ (index . 0).Labels.phase }} phase{{ end }}"
)


def steady(value: float, minutes: int = 120) -> str:
    """A promtool series value: ``value`` every minute for ``minutes`` minutes."""
    return f"{value:g}x{minutes}"


def ramp(start: float, step: float, minutes: int = 120) -> str:
    """A promtool series value: from ``start``, ``step`` more every minute."""
    return f"{start:g}{step:+g}x{minutes}"


def fired(base: dict[str, str], severity: str, **extra: str) -> dict[str, str]:
    return {**base, **extra, "severity": severity}


@dataclass(frozen=True)
class Levels:
    """A warning and a critical threshold, and a series value in each band around them."""

    warning: float
    critical: float
    quiet: float  # neither fires
    between: float  # the warning fires
    beyond: float  # both fire


def leveled(
    name: str,
    expr: str,
    levels: Levels,
    series: str,
    labels: dict[str, str],
    summary: str,
    description: str,
    for_: str,
) -> list[Alert]:
    """A warning and a critical alert of one name: ``expr`` and ``description`` hold ``{limit}``."""
    warning, critical = fired(labels, "warning"), fired(labels, "critical")
    return [
        Alert(name, expr.replace("{limit}", f"{levels.warning:g}"), "warning", summary,
              description.replace("{limit}", f"{levels.warning:g}"),
              Example([(series, steady(levels.between))], [warning]),
              Example([(series, steady(levels.quiet))]), for_=for_),
        Alert(name, expr.replace("{limit}", f"{levels.critical:g}"), "critical", summary,
              description.replace("{limit}", f"{levels.critical:g}"),
              Example([(series, steady(levels.beyond))], [warning, critical]),
              Example([(series, steady(levels.between))], [warning]), for_=for_),
    ]  # fmt: skip


# The labels that name one probed target: scheduled (target, module) or through /probe (instance).
PROBED = "instance, job, target, module, protocol"
# TLS older than 1.2 as the exporter labels it (tls_version_label: TLS 1.0 is "TLS 1"),
# a regular expression Prometheus anchors at both ends.
OLD_TLS_VERSIONS = r"TLS 1(\.[01])?|SSL.*"


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
        Alert(
            "MailPlaintextLoginOffered", f"mail_probe_plaintext_auth_offered{c.matchers()} == 1",
            "warning", "The server offers login before TLS.",
            "{{ $labels.target }} ({{ $labels.protocol }}) advertises login on an unencrypted "
            "session: passwords can be sent in the clear.",
            Example([(f"mail_probe_plaintext_auth_offered{{{TARGET}}}", steady(1))], [fired(TARGET_LABELS, "warning")]),
            Example([(f"mail_probe_plaintext_auth_offered{{{TARGET}}}", steady(0))]),
            for_="1h",
        ),
        Alert(
            "MailCertificateNotVerified", f"mail_tls_cert_verified{c.matchers()} == 0", "warning",
            unverified_summary, unverified_description,
            Example([(verified, steady(0))], [fired(TARGET_LABELS, "warning")]),
            Example([(verified, steady(1))]),
            for_="10m",
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
            # PromQL strings take backslash escapes: the regex's \. is written \\.
            "mail_tls_version_info" + c.matchers('version=~"' + OLD_TLS_VERSIONS.replace("\\", "\\\\") + '"')
            + " == 1",
            "warning", "A mail server negotiates TLS older than 1.2.",
            "{{ $labels.target }} ({{ $labels.protocol }}) negotiated {{ $labels.version }}.",
            old_tls("TLSv1"),
            Example([tls_version("TLSv1.2"), tls_version("TLSv1.3")]),
            for_="1h",
            also=(old_tls("TLSv1.1"), old_tls("SSLv3")),
        ),
    ]  # fmt: skip
    warn, crit = c.probe_slow_warning_seconds, c.probe_slow_critical_seconds
    alerts += leveled(
        "MailProbeSlow", "mail_probe_duration_seconds" + c.matchers() + " > {limit}",
        Levels(warn, crit, warn / 2, (warn + crit) / 2, crit * 2),
        f"mail_probe_duration_seconds{{{TARGET}}}", TARGET_LABELS, "A mail service answers slowly.",
        "A probe of {{ $labels.target }} ({{ $labels.protocol }}) took "
        "{{ $value | humanizeDuration }} (threshold {limit}s).", c.probe_slow_for,
    )  # fmt: skip
    warn_days, crit_days = c.cert_expiry_warning_days, c.cert_expiry_critical_days
    day = 86400
    alerts += leveled(
        "MailCertificateExpiring",
        "(mail_tls_cert_expiry_timestamp_seconds" + c.matchers() + " - time()) / 86400 < {limit}",
        Levels(warn_days, crit_days, (warn_days + 30) * day, (warn_days + crit_days) / 2 * day,
               (crit_days - 1) * day),
        f"mail_tls_cert_expiry_timestamp_seconds{{{TARGET}}}", TARGET_LABELS,
        "A mail server's certificate expires soon.",
        "The certificate chain of {{ $labels.target }} ({{ $labels.protocol }}) expires in "
        '{{ $value | printf "%.1f" }} days (threshold {limit}).', "10m",
    )  # fmt: skip
    return alerts


QUEUE = 'mta="postfix",mta_instance="postfix",instance="mailhost:9469",job="mail"'
QUEUE_LABELS = {
    "mta": "postfix",
    "mta_instance": "postfix",
    "instance": "mailhost:9469",
    "job": "mail",
}


def queue_alerts(c: Config) -> list[Alert]:
    alerts: list[Alert] = []
    for queue, name, warn, crit in (
        ("deferred", "MailQueueDeferredHigh", c.queue_deferred_warning, c.queue_deferred_critical),
        ("active", "MailQueueActiveHigh", c.queue_active_warning, c.queue_active_critical),
    ):
        alerts += leveled(
            name, "mail_queue_messages" + c.matchers(f'queue="{queue}"') + " > {limit}",
            Levels(warn, crit, warn, (warn + crit) // 2, crit + 1),
            f'mail_queue_messages{{{QUEUE},queue="{queue}"}}', {**QUEUE_LABELS, "queue": queue},
            f"Mail piles up in the {queue} queue.",
            "{{ $labels.mta }} {{ $labels.mta_instance }} on {{ $labels.instance }} holds "
            '{{ $value | printf "%.0f" }} messages in the ' + queue + " queue (threshold {limit}).",
            c.queue_for,
        )  # fmt: skip
    warn_age, crit_age = c.queue_oldest_warning_seconds, c.queue_oldest_critical_seconds
    alerts += leveled(
        "MailQueueOldestMessageOld",
        # Held mail waits on purpose (postsuper -h): it does not make the queue stuck.
        "mail_queue_oldest_message_age_seconds" + c.matchers('queue!="hold"') + " > {limit}",
        Levels(warn_age, crit_age, warn_age - 60, (warn_age + crit_age) / 2, crit_age + 60),
        f'mail_queue_oldest_message_age_seconds{{{QUEUE},queue="deferred"}}',
        {**QUEUE_LABELS, "queue": "deferred"}, "A message has waited in the queue for too long.",
        "The oldest message in the {{ $labels.queue }} queue of {{ $labels.mta_instance }} on "
        "{{ $labels.instance }} is {{ $value | humanizeDuration }} old (threshold {limit}s).", "5m",
    )  # fmt: skip
    horizon = c.queue_growth_horizon_hours * 3600
    series = f'mail_queue_messages{{{QUEUE},queue="deferred"}}'
    alerts.append(Alert(
        "MailQueueGrowing",
        "predict_linear(mail_queue_messages" + c.matchers('queue=~"deferred|active"')
        + f"[1h], {horizon}) > {c.queue_deferred_critical}"
        + " and deriv(mail_queue_messages" + c.matchers('queue=~"deferred|active"') + "[1h]) > 0",
        "warning", "A mail queue keeps growing.",
        "At its rate over the last hour the {{ $labels.queue }} queue of {{ $labels.mta_instance }} "
        f"on {{{{ $labels.instance }}}} will hold {{{{ $value | printf \"%.0f\" }}}} messages in "
        f"{c.queue_growth_horizon_hours} hours.",
        Example([(series, ramp(0, 0.1))], [fired(QUEUE_LABELS, "warning", queue="deferred")]),
        Example([(series, steady(3))]),
        for_="15m",
    ))  # fmt: skip
    alerts.append(Alert(
        "MailQueueFrozenMessages", f"mail_queue_frozen_messages{c.matchers()} > 0", "warning",
        "Exim holds frozen messages.",
        "{{ $value }} frozen messages in Exim's queue on {{ $labels.instance }}: they will not be "
        "retried until someone looks at them.",
        Example([('mail_queue_frozen_messages{mta="exim",mta_instance="exim",instance="mailhost:9469",job="mail"}', steady(2))],
                [fired({"mta": "exim", "mta_instance": "exim", **HOST_LABELS}, "warning")]),
        Example([('mail_queue_frozen_messages{mta="exim",mta_instance="exim",instance="mailhost:9469",job="mail"}', steady(0))]),
        for_="1h",
    ))  # fmt: skip
    return alerts


ROUTE = 'route="local-loop",instance="mailhost:9469",job="mail"'
ROUTE_LABELS = {"route": "local-loop", **HOST_LABELS}


def roundtrip_alerts(c: Config) -> list[Alert]:
    alerts = [
        Alert(
            "MailRoundTripFailing", f"mail_roundtrip_success{c.matchers()} == 0", "critical",
            "Test mail does not arrive.",
            "The round trip {{ $labels.route }} failed: mail sent there did not reach the mailbox "
            "in time; mail_roundtrip_failures_total says at which stage.",
            Example([(f"mail_roundtrip_success{{{ROUTE}}}", steady(0))], [fired(ROUTE_LABELS, "critical")]),
            Example([(f"mail_roundtrip_success{{{ROUTE}}}", steady(1))]),
        ),
        Alert(
            "MailRoundTripStale",
            f"time() - mail_roundtrip_last_success_timestamp_seconds{c.matchers()} > {c.roundtrip_stale_seconds}",
            "critical", "No test mail has arrived for a long time.",
            "The last successful round trip of {{ $labels.route }} was {{ $value | humanizeDuration }} ago.",
            Example([(f"mail_roundtrip_last_success_timestamp_seconds{{{ROUTE}}}", steady(0))], [fired(ROUTE_LABELS, "critical")]),
            Example([(f"mail_roundtrip_last_success_timestamp_seconds{{{ROUTE}}}", ramp(0, 60))]),
        ),
    ]  # fmt: skip
    warn, crit = c.roundtrip_slow_warning_seconds, c.roundtrip_slow_critical_seconds
    alerts += leveled(
        "MailRoundTripSlow", "mail_roundtrip_duration_seconds" + c.matchers() + " > {limit}",
        Levels(warn, crit, warn / 2, (warn + crit) / 2, crit * 2),
        f"mail_roundtrip_duration_seconds{{{ROUTE}}}", ROUTE_LABELS, "Test mail takes long to arrive.",
        "The last test message on {{ $labels.route }} took {{ $value | humanizeDuration }} "
        "to arrive (threshold {limit}s).", "10m",
    )  # fmt: skip
    return alerts


def host_alerts(c: Config) -> list[Alert]:
    path = f'path="/var/spool/postfix",{HOST}'
    path_labels = {"path": "/var/spool/postfix", **HOST_LABELS}
    horizon = c.disk_fill_horizon_hours * 3600
    service = f'service="postfix",{HOST}'
    backup = f'backup="mailstore",{HOST}'
    mount = f'mountpoint="/var/mail",device="/dev/sdb1",fstype="ext4",{HOST}'
    mount_labels = {"mountpoint": "/var/mail", "device": "/dev/sdb1", "fstype": "ext4",
                    **HOST_LABELS}  # fmt: skip
    return [
        Alert(
            "MailHostDiskFilling",
            f"predict_linear(mail_host_path_avail_bytes{c.matchers()}[6h], {horizon}) < 0"
            f" and mail_host_path_avail_bytes{c.matchers()} / mail_host_path_size_bytes{c.matchers()}"
            f" < 0.4",
            "warning", "A mail filesystem will be full soon.",
            "The filesystem of {{ $labels.path }} on {{ $labels.instance }} fills up at a rate that "
            f"leaves it full within {c.disk_fill_horizon_hours} hours.",
            Example([(f"mail_host_path_avail_bytes{{{path}}}", ramp(1e9, -5e6)),
                     (f"mail_host_path_size_bytes{{{path}}}", steady(1e10))], [fired(path_labels, "warning")]),
            Example([(f"mail_host_path_avail_bytes{{{path}}}", steady(1e9)),
                     (f"mail_host_path_size_bytes{{{path}}}", steady(1e10))]),
            for_="30m", eval_minutes=100,
        ),
        Alert(
            "MailHostDiskAlmostFull",
            f"mail_host_path_avail_bytes{c.matchers()} / mail_host_path_size_bytes{c.matchers()}"
            f" < {c.disk_free_warning_ratio:g}",
            "critical", "A mail filesystem is almost full.",
            "Only {{ $value | humanizePercentage }} of the filesystem of {{ $labels.path }} on "
            "{{ $labels.instance }} is free: queues and mailboxes stop taking mail when it is full.",
            Example([(f"mail_host_path_avail_bytes{{{path}}}", steady(5e8)),
                     (f"mail_host_path_size_bytes{{{path}}}", steady(1e10))], [fired(path_labels, "critical")]),
            Example([(f"mail_host_path_avail_bytes{{{path}}}", steady(5e9)),
                     (f"mail_host_path_size_bytes{{{path}}}", steady(1e10))]),
        ),
        Alert(
            "MailServiceDown",
            # Only services that ran in the last day: the default list names services a host
            # may simply not have (exim, rspamd, clamd, …). Postfix's smtpd exits when idle.
            "mail_host_service_up" + c.matchers('service!="smtpd"') + " == 0 and on (instance, job, service) "
            "max_over_time(mail_host_service_up" + c.matchers('service!="smtpd"') + "[1d]) == 1",
            "critical",
            "A mail service is not running.",
            "No process of {{ $labels.service }} runs on {{ $labels.instance }}.",
            Example([(f"mail_host_service_up{{{service}}}", "1x30 0x90")],
                    [fired({"service": "postfix", **HOST_LABELS}, "critical")]),
            Example([(f"mail_host_service_up{{{service}}}", steady(0))]),  # never ran here
            for_="2m",
        ),
        Alert(
            "MailBackupStale",
            f"time() - mail_host_backup_last_modified_timestamp_seconds{c.matchers()}"
            f" > {c.backup_max_age_hours * 3600}",
            "warning", "The mail backup is old.",
            "The newest file of backup {{ $labels.backup }} on {{ $labels.instance }} is "
            "{{ $value | humanizeDuration }} old.",
            Example([(f"mail_host_backup_last_modified_timestamp_seconds{{{backup}}}", steady(-c.backup_max_age_hours * 3600))],
                    [fired({"backup": "mailstore", **HOST_LABELS}, "warning")]),
            Example([(f"mail_host_backup_last_modified_timestamp_seconds{{{backup}}}", ramp(0, 60))]),
            for_="30m",
        ),
        Alert(
            "MailBackupMissing", f"mail_host_backup_files{c.matchers()} == 0", "warning",
            "No file of a mail backup is there.",
            "Nothing matches the path of backup {{ $labels.backup }} on {{ $labels.instance }}: "
            "the backup never ran, its disk is not mounted, or the exporter may not read it.",
            Example([(f"mail_host_backup_files{{{backup}}}", steady(0))],
                    [fired({"backup": "mailstore", **HOST_LABELS}, "warning")]),
            Example([(f"mail_host_backup_files{{{backup}}}", steady(7))]),
            for_="30m",
        ),
        Alert(
            "MailHostInodesLow",
            f"mail_host_path_files_free{c.matchers()} / mail_host_path_files{c.matchers()}"
            f" < {c.inodes_free_warning_ratio:g}",
            "warning", "A mail filesystem runs out of inodes.",
            "Only {{ $value | humanizePercentage }} of the inodes of the filesystem of "
            "{{ $labels.path }} on {{ $labels.instance }} are free: every Maildir message takes one.",
            Example([(f"mail_host_path_files_free{{{path}}}", steady(5e4)),
                     (f"mail_host_path_files{{{path}}}", steady(1e6))], [fired(path_labels, "warning")]),
            Example([(f"mail_host_path_files_free{{{path}}}", steady(5e5)),
                     (f"mail_host_path_files{{{path}}}", steady(1e6))]),
            for_="15m",
        ),
        Alert(
            "MailHostFilesystemReadOnly",
            # Only filesystems that were writable in the last day: some are read-only on
            # purpose (squashfs snaps, ISO images, a read-only /usr).
            f"mail_host_filesystem_readonly{c.matchers()} == 1 and on (instance, job, mountpoint, device, fstype) "
            f"min_over_time(mail_host_filesystem_readonly{c.matchers()}[1d]) == 0",
            "critical", "A filesystem of the mail host turned read-only.",
            "{{ $labels.mountpoint }} ({{ $labels.device }}, {{ $labels.fstype }}) on {{ $labels.instance }} "
            "is mounted read-only: the kernel does this after I/O or filesystem errors, and mail "
            "written there (queue, mailboxes, logs) now fails.",
            Example([(f"mail_host_filesystem_readonly{{{mount}}}", "0x30 1x90")], [fired(mount_labels, "critical")]),
            Example([(f"mail_host_filesystem_readonly{{{mount}}}", steady(1))]),  # read-only on purpose
            for_="2m",
        ),
        Alert(
            "MailHostTemperatureHigh",
            f"mail_host_temperature_celsius{c.matchers()} >= on (instance, job, chip, sensor) "
            f"mail_host_temperature_high_celsius{c.matchers()} - {c.temperature_margin_celsius:g}",
            "warning", "A sensor of the mail host runs hot.",
            "{{ $labels.chip }} {{ $labels.sensor }} on {{ $labels.instance }} reads "
            '{{ $value | printf "%.0f" }} °C, near its high threshold.',
            Example([(f'mail_host_temperature_celsius{{chip="coretemp",sensor="Core 0",{HOST}}}', steady(80)),
                     (f'mail_host_temperature_high_celsius{{chip="coretemp",sensor="Core 0",{HOST}}}', steady(82))],
                    [fired({"chip": "coretemp", "sensor": "Core 0", **HOST_LABELS}, "warning")]),
            Example([(f'mail_host_temperature_celsius{{chip="coretemp",sensor="Core 0",{HOST}}}', steady(50)),
                     (f'mail_host_temperature_high_celsius{{chip="coretemp",sensor="Core 0",{HOST}}}', steady(82))]),
            for_="10m",
        ),
        Alert(
            "MailHostDiskUnhealthy", f"mail_host_smart_healthy{c.matchers()} == 0", "critical",
            "A disk of the mail host fails its S.M.A.R.T. self-assessment.",
            "Disk {{ $labels.device }} on {{ $labels.instance }} reports its health as failing: "
            "replace it before the mail store is lost.",
            Example([(f'mail_host_smart_healthy{{device="/dev/sda",{HOST}}}', steady(0))],
                    [fired({"device": "/dev/sda", **HOST_LABELS}, "critical")]),
            Example([(f'mail_host_smart_healthy{{device="/dev/sda",{HOST}}}', steady(1))]),
            for_="5m",
        ),
        Alert(
            "MailHostDiskSectorsFailing",
            f"delta(mail_host_smart_reallocated_sectors{c.matchers()}[1d]) > 0"
            f" or mail_host_smart_pending_sectors{c.matchers()} > 0",
            "warning", "A disk of the mail host grows bad sectors.",
            "Disk {{ $labels.device }} on {{ $labels.instance }} has reallocated or pending "
            "sectors ({{ $value }} new or waiting): it is wearing out.",
            Example([(f'mail_host_smart_pending_sectors{{device="/dev/sda",{HOST}}}', steady(8))],
                    [fired({"device": "/dev/sda", **HOST_LABELS}, "warning")]),
            Example([(f'mail_host_smart_pending_sectors{{device="/dev/sda",{HOST}}}', steady(0)),
                     (f'mail_host_smart_reallocated_sectors{{device="/dev/sda",{HOST}}}', steady(12))]),
            for_="1h",
        ),
    ]  # fmt: skip


def log_alerts(c: Config) -> list[Alert]:
    mta = f'mta="postfix",{HOST}'
    mta_labels = {"mta": "postfix", **HOST_LABELS}
    fatal = "mail_log_problems_total" + c.matchers('severity=~"fatal|panic"')
    problems = f'mail_log_problems_total{{{mta},service="smtpd",severity="fatal"}}'
    return [
        Alert(
            "MailBounceRatioHigh", f"mail:deliveries:bounce_ratio_rate15m{c.matchers()} > {c.bounce_ratio_warning:g}",
            "warning", "Many deliveries bounce.",
            "{{ $value | humanizePercentage }} of the deliveries of {{ $labels.mta }} on "
            "{{ $labels.instance }} bounced over the last 15 minutes.",
            Example([(f'mail_deliveries_total{{{mta},transport="smtp",status="bounced"}}', ramp(0, 30)),
                     (f'mail_deliveries_total{{{mta},transport="smtp",status="sent"}}', ramp(0, 60))],
                    [fired({"mta": "postfix", **HOST_LABELS}, "warning")]),
            Example([(f'mail_deliveries_total{{{mta},transport="smtp",status="bounced"}}', ramp(0, 1)),
                     (f'mail_deliveries_total{{{mta},transport="smtp",status="sent"}}', ramp(0, 60))]),
            for_="15m",
        ),
        Alert(
            "MailDeferRatioHigh", f"mail:deliveries:defer_ratio_rate15m{c.matchers()} > {c.defer_ratio_warning:g}",
            "warning", "Many deliveries are deferred.",
            "{{ $value | humanizePercentage }} of the delivery attempts of {{ $labels.mta }} on "
            "{{ $labels.instance }} were deferred over the last 15 minutes.",
            Example([(f'mail_deliveries_total{{{mta},transport="smtp",status="deferred"}}', ramp(0, 30)),
                     (f'mail_deliveries_total{{{mta},transport="smtp",status="sent"}}', ramp(0, 60))],
                    [fired({"mta": "postfix", **HOST_LABELS}, "warning")]),
            Example([(f'mail_deliveries_total{{{mta},transport="smtp",status="deferred"}}', ramp(0, 1)),
                     (f'mail_deliveries_total{{{mta},transport="smtp",status="sent"}}', ramp(0, 60))]),
            for_="15m",
        ),
        Alert(
            "MailAuthBruteForce",
            f"sum by (instance, job, mta, service) (rate(mail_auth_failures_total{c.matchers()}[5m]))"
            f" > {c.auth_failures_per_second_warning:g}",
            "warning", "Many failed logins: a password-guessing attack.",
            "{{ $labels.mta }} {{ $labels.service }} on {{ $labels.instance }} sees "
            '{{ $value | printf "%.1f" }} failed logins per second.',
            Example([(f'mail_auth_failures_total{{{mta},service="submission/smtpd"}}', ramp(0, 300))],
                    [fired({"mta": "postfix", "service": "submission/smtpd", **HOST_LABELS}, "warning")]),
            Example([(f'mail_auth_failures_total{{{mta},service="submission/smtpd"}}', ramp(0, 3))]),
            for_="10m",
        ),
        Alert(
            "MailLogFatalErrors",
            # A counter appears with its first line: a series new within the window counts too.
            f"sum by (instance, job, mta, service) (increase({fatal}[15m])) > 0 "
            f"or sum by (instance, job, mta, service) ({fatal} unless {fatal} offset 15m)",
            "warning", "A mail program logs fatal errors.",
            "{{ $labels.mta }} {{ $labels.service }} on {{ $labels.instance }} logged "
            '{{ $value | printf "%.0f" }} fatal or panic lines in the last 15 minutes: the '
            "process gave up (a missing map, a bad configuration, a full disk), and what it "
            "handles waits or fails.",
            Example([(problems, "_x60 1x60")], [fired(mta_labels, "warning", service="smtpd")]),
            Example([(problems, steady(3))]),
            for_="0m", eval_minutes=65,
            also=(Example([(problems, "3x60 4x60")], [fired(mta_labels, "warning", service="smtpd")]),
                  Example([(f'mail_log_problems_total{{{mta},service="smtpd",severity="warning"}}', "_x60 1x60")])),
        ),
        Alert(
            "MailLogSourceDown", f"mail_log_source_up{c.matchers()} == 0", "warning",
            "A mail log cannot be read.",
            "Log source {{ $labels.source }} on {{ $labels.instance }} is not being read (missing, "
            "unreadable, journal unavailable): deliveries, rejects and logins from it go uncounted.",
            Example([(f'mail_log_source_up{{source="/var/log/mail.log",{HOST}}}', steady(0))],
                    [fired({"source": "/var/log/mail.log", **HOST_LABELS}, "warning")]),
            Example([(f'mail_log_source_up{{source="/var/log/mail.log",{HOST}}}', steady(1))]),
            for_="10m",
        ),
    ]  # fmt: skip


def dns_alerts(c: Config) -> list[Alert]:
    listed = f'zone="zen.spamhaus.org",ip="192.0.2.25",{HOST}'
    listed_labels = {"zone": "zen.spamhaus.org", "ip": "192.0.2.25", **HOST_LABELS}
    domain = f'domain="example.com",{HOST}'
    domain_labels = {"domain": "example.com", **HOST_LABELS}
    dkim = f'domain="example.com",selector="mail",{HOST}'
    dkim_labels = {"domain": "example.com", "selector": "mail", **HOST_LABELS}
    mx = f'domain="example.com",mx="mx1.example.com",{HOST}'
    mx_labels = {"domain": "example.com", "mx": "mx1.example.com", **HOST_LABELS}
    dane = f'mx="mx1.example.com",{HOST}'
    dane_labels = {"mx": "mx1.example.com", **HOST_LABELS}
    ip = f'ip="192.0.2.25",{HOST}'
    ip_labels = {"ip": "192.0.2.25", **HOST_LABELS}
    dbl = f'zone="dbl.spamhaus.org",domain="example.com",{HOST}'
    dbl_labels = {"zone": "dbl.spamhaus.org", "domain": "example.com", **HOST_LABELS}

    def flag(
        name: str,
        metric: str,
        series: str,
        labels: dict[str, str],
        severity: str,
        summary: str,
        description: str,
    ) -> Alert:
        """An alert on a 0/1 DNS fact that is 0."""
        return Alert(
            name,
            f"{metric}{c.matchers()} == 0",
            severity,
            summary,
            description,
            Example([(f"{metric}{{{series}}}", steady(0))], [fired(labels, severity)]),
            Example([(f"{metric}{{{series}}}", steady(1))]),
            for_=c.dns_for,
        )

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
            f"sum by (instance, job, zone, reason) (increase(mail_dnsbl_check_errors_total{c.matchers()}[1h])) > 0",
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
            f"sum by (instance, job, check, reason) (increase(mail_dns_check_errors_total{c.matchers()}[1h])) > 0",
            "warning", "A DNS check cannot be done.",
            '{{ $value | printf "%.0f" }} {{ $labels.check }} checks on {{ $labels.instance }} ended in '
            "{{ $labels.reason }} over the last hour: their series are left out, so the alerts on "
            "them cannot fire.",
            Example([(f'mail_dns_check_errors_total{{check="spf",reason="servfail",{HOST}}}', ramp(0, 1))],
                    [fired({"check": "spf", "reason": "servfail", **HOST_LABELS}, "warning")]),
            Example([(f'mail_dns_check_errors_total{{check="spf",reason="servfail",{HOST}}}', steady(2))]),
            for_=c.dns_errors_for,
        ),
        flag("MailSpfInvalid", "mail_dns_spf_valid", domain, domain_labels, "critical",
             "A mail domain's SPF record is broken.",
             "{{ $labels.domain }} has no single valid SPF record, needs more than 10 DNS "
             "lookups or makes more than 2 void lookups (see mail_dns_spf_records, "
             "mail_dns_spf_lookups and mail_dns_spf_void_lookups): receivers treat its mail "
             "as failing SPF."),
        flag("MailDmarcMissing", "mail_dns_dmarc_present", domain, domain_labels, "warning",
             "A mail domain has no DMARC record.",
             "_dmarc.{{ $labels.domain }} has no (single) DMARC record: large receivers junk or "
             "reject mail from domains without one."),
        flag("MailDkimKeyMissing", "mail_dns_dkim_key_present", dkim, dkim_labels, "critical",
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
        flag("MailMxMissing", "mail_dns_mx_records", domain, domain_labels, "critical",
             "A mail domain has no MX record.",
             "{{ $labels.domain }} names no MX host (none, or a null MX): senders fall back to "
             "its A record or give up, and its mail does not arrive."),
        flag("MailMxExpectedMissing", "mail_dns_mx_expected", mx, mx_labels, "critical",
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
        flag("MailMxUnresolvable", "mail_dns_mx_resolvable", mx, mx_labels, "critical",
             "An MX host has no address.",
             "MX {{ $labels.mx }} of {{ $labels.domain }} resolves to no A or AAAA address: "
             "senders cannot deliver to it."),
        flag("MailPtrNotConfirmed", "mail_dns_ptr_forward_confirmed", ip, ip_labels, "warning",
             "A sending IP's reverse DNS is not forward-confirmed.",
             "{{ $labels.ip }} has no PTR, or its PTR name does not resolve back to it: many "
             "receivers reject mail from such IPs."),
        flag("MailPtrHeloMismatch", "mail_dns_ptr_matches_helo", ip, ip_labels, "warning",
             "A sending IP's PTR is not the HELO name.",
             "No PTR name of {{ $labels.ip }} is the configured HELO name: receivers score "
             "the mismatch as spam."),
        Alert(
            "MailMtaStsMismatch",
            # Only an enforced policy stops delivery; in testing mode senders merely report.
            f"mail_dns_mta_sts_mx_covered{c.matchers()} == 0 and on (instance, job, domain) "
            + "mail_dns_mta_sts_mode_info" + c.matchers('mode="enforce"') + " == 1",
            "critical", "The MTA-STS policy does not cover every MX.",
            "An MX host of {{ $labels.domain }} matches no mx line of its enforced MTA-STS policy: "
            "senders that enforce the policy will not deliver to it.",
            Example([(f"mail_dns_mta_sts_mx_covered{{{domain}}}", steady(0)),
                     (f'mail_dns_mta_sts_mode_info{{mode="enforce",{domain}}}', steady(1))],
                    [fired(domain_labels, "critical")]),
            Example([(f"mail_dns_mta_sts_mx_covered{{{domain}}}", steady(0)),
                     (f'mail_dns_mta_sts_mode_info{{mode="testing",{domain}}}', steady(1))]),
            for_=c.dns_for,
        ),
        flag("MailMtaStsPolicyInvalid", "mail_dns_mta_sts_policy_valid", domain, domain_labels,
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
            f"time() - mail_dns_last_run_timestamp_seconds{c.matchers()} > {c.dns_stale_seconds}",
            "warning", "The DNS checks have not finished for a while.",
            "mail_exporter on {{ $labels.instance }} has no finished DNS pass for "
            "{{ $value | humanizeDuration }}: the DNS and blocklist facts are old.",
            Example([(f"mail_dns_last_run_timestamp_seconds{{{HOST}}}", steady(0))], [fired(HOST_LABELS, "warning")]),
            Example([(f"mail_dns_last_run_timestamp_seconds{{{HOST}}}", ramp(0, 60))]),
            for_="15m",
        ),
    ]  # fmt: skip


def spam_alerts(c: Config) -> list[Alert]:
    rejects = "mail_smtpd_rejects_total" + c.matchers('reason=~"spam|rbl|malware"')
    series = f'mail_smtpd_rejects_total{{mta="postfix",service="smtpd",reason="rbl",{HOST}}}'
    by = "instance, job, mta"
    return [
        Alert(
            "MailSpamRejectSpike",
            f"sum by ({by}) (rate({rejects}[15m])) > {c.spam_reject_spike_factor:g} * "
            f"sum by ({by}) (rate({rejects}[1d])) and sum by ({by}) (rate({rejects}[15m])) > 0.1",
            "warning", "Spam and blocklist rejects spike.",
            "{{ $labels.mta }} on {{ $labels.instance }} rejects spam, malware or listed clients "
            '{{ $value | printf "%.2f" }} times a second, more than '
            f"{c.spam_reject_spike_factor:g} times its daily average: a spam wave, or a filter gone wrong.",
            Example([(series, "0+1x100 100+30x20")], [fired({"mta": "postfix", **HOST_LABELS}, "warning")]),
            Example([(series, ramp(0, 1))]),
            for_="10m", eval_minutes=120,
        ),
    ]  # fmt: skip


def exporter_alerts(c: Config) -> list[Alert]:
    return [
        Alert(
            "MailExporterDown", f'up{{job=~"{c.exporter_jobs}"}} == 0', "critical",
            "mail_exporter cannot be scraped.",
            "Prometheus cannot scrape mail_exporter on {{ $labels.instance }}: none of its mail "
            "checks are known.",
            Example([(f'up{{{HOST}}}', steady(0))], [fired(HOST_LABELS, "critical")]),
            Example([(f'up{{{HOST}}}', steady(1))]),
            for_="2m",
        ),
        Alert(
            "MailExporterCollectorFailing", f"mail_exporter_collector_success{c.matchers()} == 0",
            "warning", "A mail_exporter collector fails.",
            "Collector {{ $labels.collector }} on {{ $labels.instance }} cannot read its source; "
            "the exporter's log says why.",
            Example([(f'mail_exporter_collector_success{{collector="postfix_queue",{HOST}}}', steady(0))],
                    [fired({"collector": "postfix_queue", **HOST_LABELS}, "warning")]),
            Example([(f'mail_exporter_collector_success{{collector="postfix_queue",{HOST}}}', steady(1))]),
            for_="10m",
        ),
        Alert(
            "MailExporterConfigReloadFailed",
            f"mail_exporter_config_last_reload_successful{c.matchers()} == 0",
            "warning", "mail_exporter's configuration reload failed.",
            "mail_exporter on {{ $labels.instance }} runs on its previous configuration: the new "
            "file has errors (see mail-exporter check-config).",
            Example([(f"mail_exporter_config_last_reload_successful{{{HOST}}}", steady(0))], [fired(HOST_LABELS, "warning")]),
            Example([(f"mail_exporter_config_last_reload_successful{{{HOST}}}", steady(1))]),
        ),
    ]  # fmt: skip


def recording_rules(c: Config) -> list[dict[str, str]]:
    deliveries = f"mail_deliveries_total{c.matchers()}"
    by = "instance, job, mta"
    return [
        {"record": "mail:tls_cert_expiry:days",
         "expr": f"(mail_tls_cert_expiry_timestamp_seconds{c.matchers()} - time()) / 86400"},
        {"record": "mail:probe_latency_seconds:p95_rate1h",
         "expr": "histogram_quantile(0.95, sum by (instance, job, target, protocol, le) "
                 f"(rate(mail_probe_latency_seconds_bucket{c.matchers()}[1h])))"},
        {"record": "mail:roundtrip_delivery_seconds:p95_rate1h",
         "expr": "histogram_quantile(0.95, sum by (instance, job, route, le) "
                 f"(rate(mail_roundtrip_delivery_seconds_bucket{c.matchers()}[1h])))"},
        {"record": "mail:deliveries:bounce_ratio_rate15m",
         "expr": f'sum by ({by}) (rate({deliveries.rstrip("}") + "," if c.selector else "mail_deliveries_total{"}status="bounced"}}[15m]))'
                 f" / sum by ({by}) (rate({deliveries}[15m])) > 0"},
        {"record": "mail:deliveries:defer_ratio_rate15m",
         "expr": f'sum by ({by}) (rate({deliveries.rstrip("}") + "," if c.selector else "mail_deliveries_total{"}status="deferred"}}[15m]))'
                 f" / sum by ({by}) (rate({deliveries}[15m])) > 0"},
    ]  # fmt: skip


def all_alerts(c: Config = CONFIG) -> list[Alert]:
    return [*probe_alerts(c), *queue_alerts(c), *roundtrip_alerts(c), *host_alerts(c),
            *log_alerts(c), *spam_alerts(c), *dns_alerts(c), *exporter_alerts(c)]  # fmt: skip


def rules_file(c: Config = CONFIG) -> dict[str, Any]:
    return {
        "groups": [
            {"name": "mail_exporter.recording", "rules": recording_rules(c)},
            {"name": "mail_exporter.alerts", "rules": [alert.rule() for alert in all_alerts(c)]},
        ]
    }


def _case(alert: Alert, example: Example) -> dict[str, Any]:
    expected = [{"exp_labels": {"alertname": alert.name, **labels}} for labels in example.alerts]
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in example.series],
        "alert_rule_test": [{"eval_time": f"{alert.eval_minutes}m", "alertname": alert.name,
                             "exp_alerts": expected}],
    }  # fmt: skip


TEST_RULES_FILE = "rules_without_annotations.yml"


def test_rules_file(c: Config = CONFIG) -> dict[str, Any]:
    """The shipped rules without annotations, for ``promtool test rules``.

    promtool compares annotations verbatim, values and all; the cases here check what
    decides whether and how an alert fires (expression, ``for``, labels). The
    annotations' templates are checked by ``promtool check rules`` and rendered by a
    real Prometheus in the end-to-end test.
    """
    shipped = rules_file(c)
    for group in shipped["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return shipped


def tests_file(c: Config = CONFIG) -> dict[str, Any]:
    """promtool cases: each alert firing under its example, quiet under the other, and its
    further cases."""
    cases = []
    for alert in all_alerts(c):
        cases += [_case(alert, example) for example in (alert.fires, alert.quiet, *alert.also)]
    return {"rule_files": [TEST_RULES_FILE], "evaluation_interval": "1m", "tests": cases}
