"""Alerts on mail_exporter itself: not scraped, a collector failing, a reload refused."""

from __future__ import annotations

from mixin.config import Config
from mixin.rules.alert import HOST, HOST_LABELS, Alert, Example, fired, flag_alert, steady

OTHER_JOB = 'instance="mailhost:9469",job="mail_exporter"'
OTHER_JOB_LABELS = {"instance": "mailhost:9469", "job": "mail_exporter"}


def exporter_alerts(c: Config) -> list[Alert]:
    return [
        Alert(
            # By the job's name, or by what its target returned before: any job name will do.
            "MailExporterDown",
            f'up{{job=~"{c.exporter_jobs}"}} == 0 or (up == 0 and on (instance, job) '
            f"max_over_time(mail_exporter_build_info[{c.exporter_seen_window}]))",
            "critical", "mail_exporter cannot be scraped.",
            "Prometheus cannot scrape mail_exporter on {{ $labels.instance }}: none of its mail "
            "checks are known.",
            Example([(f'up{{{HOST}}}', steady(0))], [fired(HOST_LABELS, "critical")]),
            Example([(f'up{{{HOST}}}', steady(1))]),
            for_="2m",
            also=(
                # A job named otherwise, which served the exporter's /metrics until it went down.
                Example([(f'up{{{OTHER_JOB}}}', "1x10 0x110"),
                         (f'mail_exporter_build_info{{{OTHER_JOB},version="1"}}', "1x10")],
                        [fired(OTHER_JOB_LABELS, "critical")]),
                # Another exporter's job, down: not this alert's.
                Example([(f'up{{{OTHER_JOB}}}', steady(0))]),
            ),
        ),
        flag_alert(
            c, "MailExporterCollectorFailing", "mail_exporter_collector_success",
            {"collector": "postfix_queue", **HOST_LABELS}, "warning", "A mail_exporter collector fails.",
            "Collector {{ $labels.collector }} on {{ $labels.instance }} cannot read its source; "
            "the exporter's log says why.",
            for_="10m",
        ),
        flag_alert(
            c, "MailExporterConfigReloadFailed", "mail_exporter_config_last_reload_successful",
            HOST_LABELS, "warning", "mail_exporter's configuration reload failed.",
            "mail_exporter on {{ $labels.instance }} runs on its previous configuration: the new "
            "file has errors (see mail-exporter check-config).",
        ),
    ]  # fmt: skip
