"""Alerts on the mail host: disks filling, services down, backups, sensors, S.M.A.R.T.,
Dovecot users past their quota, the certificate files the servers use."""

from __future__ import annotations

from mixin.config import Config
from mixin.promql import DAY_SECONDS, HOUR_SECONDS, age, cert_file_days_left, path_free_bytes_ahead
from mixin.rules.alert import HOST, HOST_LABELS, Alert, Example, fired, flag_alert, ramp, steady


def host_alerts(c: Config) -> list[Alert]:
    path = f'path="/var/spool/postfix",{HOST}'
    path_labels = {"path": "/var/spool/postfix", **HOST_LABELS}
    service = f'service="postfix",{HOST}'
    backup = f'backup="mailstore",{HOST}'
    mount = f'mountpoint="/var/mail",device="/dev/sdb1",fstype="ext4",{HOST}'
    mount_labels = {"mountpoint": "/var/mail", "device": "/dev/sdb1", "fstype": "ext4",
                    **HOST_LABELS}  # fmt: skip
    cert_file_labels = {"path": "/etc/ssl/certs/mail.pem", **HOST_LABELS}
    cert_file = f'path="/etc/ssl/certs/mail.pem",{HOST}'
    warn_days = c.cert_expiry_warning_days
    return [
        Alert(
            "MailHostDiskFilling",
            f"{path_free_bytes_ahead(config=c)} < 0"
            f" and mail_host_path_avail_bytes{c.matchers()} / mail_host_path_size_bytes{c.matchers()}"
            f" < {c.disk_fill_max_free_ratio:g}",
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
            f"{age('mail_host_backup_last_modified_timestamp_seconds', config=c)}"
            f" > {c.backup_max_age_hours * HOUR_SECONDS}",
            "warning", "The mail backup is old.",
            "The newest file of backup {{ $labels.backup }} on {{ $labels.instance }} is "
            "{{ $value | humanizeDuration }} old.",
            Example([(f"mail_host_backup_last_modified_timestamp_seconds{{{backup}}}", steady(-c.backup_max_age_hours * HOUR_SECONDS))],
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
        flag_alert(
            c, "MailHostDiskUnhealthy", "mail_host_smart_healthy", {"device": "/dev/sda", **HOST_LABELS},
            "critical", "A disk of the mail host fails its S.M.A.R.T. self-assessment.",
            "Disk {{ $labels.device }} on {{ $labels.instance }} reports its health as failing: "
            "replace it before the mail store is lost.",
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
        Alert(
            "MailUsersOverQuota",
            "mail_dovecot_quota_users" + c.matchers('band="over"') + f" > {c.users_over_quota_max}",
            "warning", "Mail users are at or past their quota.",
            "{{ $value }} users on {{ $labels.instance }} are at or past a quota limit: mail to "
            "them is refused or bounced. The fullest are in mail_dovecot_user_quota_ratio.",
            Example([(f'mail_dovecot_quota_users{{band="over",{HOST}}}', steady(3))],
                    [fired({"band": "over", **HOST_LABELS}, "warning")]),
            Example([(f'mail_dovecot_quota_users{{band="over",{HOST}}}', steady(0)),
                     (f'mail_dovecot_quota_users{{band="95_100",{HOST}}}', steady(4))]),
            for_="15m",
        ),
        Alert(
            # The probes' warning threshold: a file that is renewed in time is also served in
            # time, once the service reloads it (MailCertificateExpiring watches that).
            "MailCertificateFileExpiring", f"{cert_file_days_left(config=c)} < {warn_days}",
            "warning", "A certificate file of the mail servers expires soon.",
            "The certificate in {{ $labels.path }} on {{ $labels.instance }} expires in "
            f'{{{{ $value | printf "%.1f" }}}} days (threshold {warn_days}): renew it and '
            "reload the services that use it.",
            Example([(f"mail_tls_cert_file_expiry_timestamp_seconds{{{cert_file}}}",
                      steady((warn_days - 5) * DAY_SECONDS))], [fired(cert_file_labels, "warning")]),
            Example([(f"mail_tls_cert_file_expiry_timestamp_seconds{{{cert_file}}}",
                      steady((warn_days + 30) * DAY_SECONDS))]),
            for_="10m",
        ),
        flag_alert(
            c, "MailCertificateFileUnreadable", "mail_tls_cert_file_readable", cert_file_labels,
            "warning", "A certificate file cannot be read.",
            "{{ $labels.path }} on {{ $labels.instance }} cannot be read by the exporter or "
            "holds no PEM certificate: its expiry goes unwatched, and a service that reads it "
            "at its next restart may not start. The reason is in the exporter's log.",
            for_="15m",
        ),
    ]  # fmt: skip
