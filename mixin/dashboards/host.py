"""The ``mail-host`` dashboard: the mail host (services, CPU, memory, disks, its switch
port, sensors, S.M.A.R.T., backups, the certificate files, the Dovecot mailbox store)."""

from __future__ import annotations

from mixin.config import CONFIG
from mixin.dashboards.host_switch import switch_port_row
from mixin.dashboards.shared import CERT_DAYS, INSTANCE, UP_DOWN, broken
from mixin.grafana import (
    DAYS,
    NAMED,
    Json,
    Query,
    Row,
    any_is_bad,
    bargauge,
    colored_cells,
    column,
    dashboard,
    flag,
    higher_is_worse,
    label_variable,
    stat,
    table,
    thresholds,
    timeseries,
)
from mixin.promql import (
    HOUR_SECONDS,
    age,
    cert_file_days_left,
    path_free_bytes_ahead,
    rate,
    series,
    sum_by,
)

HOST = INSTANCE
NVME_WEAR = higher_is_worse(CONFIG.nvme_used_warning_ratio, CONFIG.nvme_used_critical_ratio)
FILESYSTEM_LEGEND = "{{instance}} {{mountpoint}}"
LOW_SPACE = thresholds("red", (CONFIG.disk_free_warning_ratio, "green"))
LOW_INODES = thresholds("red", (CONFIG.inodes_free_warning_ratio, "green"))


def ratio(part: str, whole: str) -> str:
    """``part / whole`` of two host gauges with the same labels."""
    return f"{series(part, HOST)} / {series(whole, HOST)}"


def _host_services() -> Row:
    return Row(
        "Services",
        [
            stat(
                "Services",
                "Each configured mail service: up while at least one of its processes runs.",
                Query(series("mail_host_service_up", HOST), "{{service}}"),
                mappings=UP_DOWN,
                text=NAMED,
                width=18,
            ),
            stat(
                "Host uptime",
                "Time since the host booted.",
                Query(age("mail_host_boot_time_seconds", HOST), "{{instance}}"),
                unit="s",
                text=NAMED,
                width=6,
            ),
            timeseries(
                "Processes by service",
                "Processes of each mail service.",
                Query(series("mail_host_service_processes", HOST), "{{instance}} {{service}}"),
            ),
            timeseries(
                "Service uptime",
                "Time since each service's oldest process started: a drop is a restart.",
                Query(
                    age("mail_host_service_start_time_seconds", HOST), "{{instance}} {{service}}"
                ),
                unit="s",
            ),
            timeseries(
                "Memory by service",
                "Resident memory of each service's processes.",
                Query(
                    series("mail_host_service_resident_memory_bytes", HOST),
                    "{{instance}} {{service}}",
                ),
                unit="bytes",
                width=8,
            ),
            timeseries(
                "CPU by service",
                "CPU seconds per second each service's processes use (1 = one CPU busy).",
                Query(
                    rate("mail_host_service_cpu_seconds_total", HOST), "{{instance}} {{service}}"
                ),
                width=8,
            ),
            timeseries(
                "Open files by service",
                "Open files, sockets and pipes of each service's processes.",
                Query(series("mail_host_service_open_fds", HOST), "{{instance}} {{service}}"),
                width=8,
            ),
        ],
    )


def _host_cpu_memory() -> Row:
    busy = sum_by("instance, mode", rate("mail_host_cpu_seconds_total", HOST, 'mode!="idle"'))
    cpus = sum_by("instance", series("mail_host_cpus", HOST))
    total = series("mail_host_memory_total_bytes", HOST)
    swap_total = series("mail_host_swap_total_bytes", HOST)
    return Row(
        "CPU, memory and load",
        [
            timeseries(
                "CPU usage by mode",
                "Share of all CPUs busy, by mode (idle left out), stacked: 100% is every CPU.",
                Query(f"{busy} / on (instance) group_left () {cpus}", "{{instance}} {{mode}}"),
                unit="percentunit",
                stack=True,
                width=8,
            ),
            timeseries(
                "Load per CPU",
                "Load averages divided by the number of CPUs: above 1, work waits for a CPU.",
                *(
                    Query(ratio(f"mail_host_load{minutes}", "mail_host_cpus"), legend)
                    for minutes, legend in (
                        (1, "{{instance}} 1 min"),
                        (5, "{{instance}} 5 min"),
                        (15, "{{instance}} 15 min"),
                    )
                ),
                width=8,
            ),
            timeseries(
                "Memory and swap",
                "Memory in use (total minus available), page cache and buffers, and swap in "
                "use, against the totals.",
                Query(
                    f"{total} - {series('mail_host_memory_available_bytes', HOST)}",
                    "{{instance}} used",
                ),
                Query(
                    f"{series('mail_host_memory_cached_bytes', HOST)} + "
                    f"{series('mail_host_memory_buffers_bytes', HOST)}",
                    "{{instance}} cache and buffers",
                ),
                Query(total, "{{instance}} total"),
                Query(
                    f"{swap_total} - {series('mail_host_swap_free_bytes', HOST)}",
                    "{{instance}} swap used",
                ),
                unit="bytes",
                width=8,
            ),
        ],
    )


def _host_paths() -> Row:
    avail = series("mail_host_path_avail_bytes", HOST)
    horizon = CONFIG.disk_fill_horizon_hours
    return Row(
        "Mail paths",
        [
            bargauge(
                "Free space on mail paths",
                "Share of the filesystem behind each mail path (queue, store, logs) still free; "
                f"red under {CONFIG.disk_free_warning_ratio:.0%}.",
                Query(
                    ratio("mail_host_path_avail_bytes", "mail_host_path_size_bytes"),
                    "{{instance}} {{path}}",
                    instant=True,
                ),
                unit="percentunit",
                steps=LOW_SPACE,
                width=8,
            ),
            bargauge(
                "Free inodes on mail paths",
                "Share of the inodes still free behind each mail path: a Maildir takes one per "
                f"message. Red under {CONFIG.inodes_free_warning_ratio:.0%}.",
                Query(
                    ratio("mail_host_path_files_free", "mail_host_path_files"),
                    "{{instance}} {{path}}",
                    instant=True,
                ),
                unit="percentunit",
                steps=LOW_INODES,
                width=8,
            ),
            bargauge(
                f"Free in {horizon} h at this rate",
                f"Free space behind each mail path in {horizon} hours if the last "
                f"{CONFIG.disk_fill_trend_hours} hours' trend goes on (predict_linear, as the "
                "disk-filling alert): red when it runs out.",
                Query(path_free_bytes_ahead(HOST), "{{instance}} {{path}}", instant=True),
                unit="bytes",
                steps=thresholds("red", (0, "green")),
                width=8,
            ),
            timeseries(
                "Free bytes on mail paths",
                "Bytes free on the filesystem behind each mail path.",
                Query(avail, "{{instance}} {{path}}"),
                unit="bytes",
                width=24,
            ),
        ],
    )


def _host_filesystems() -> Row:
    return Row(
        "Filesystems",
        [
            bargauge(
                "Free space",
                "Share of each filesystem still free to unprivileged users; red under "
                f"{CONFIG.disk_free_warning_ratio:.0%}.",
                Query(
                    ratio("mail_host_filesystem_avail_bytes", "mail_host_filesystem_size_bytes"),
                    FILESYSTEM_LEGEND,
                    instant=True,
                ),
                unit="percentunit",
                steps=LOW_SPACE,
                width=10,
            ),
            bargauge(
                "Free inodes",
                "Share of each filesystem's inodes still free; red under "
                f"{CONFIG.inodes_free_warning_ratio:.0%}.",
                Query(
                    ratio("mail_host_filesystem_files_free", "mail_host_filesystem_files"),
                    FILESYSTEM_LEGEND,
                    instant=True,
                ),
                unit="percentunit",
                steps=LOW_INODES,
                width=10,
            ),
            broken(
                "Read-only",
                "Filesystems mounted read-only: mail cannot be written there (often after "
                "errors).",
                f"{series('mail_host_filesystem_readonly', HOST)} == 1",
                width=4,
                height=8,
            ),
        ],
    )


NETWORK_PROBLEMS = ("receive_errors", "transmit_errors", "receive_drops", "transmit_drops")


def _host_io() -> Row:
    device = "{{instance}} {{device}}"
    return Row(
        "Disks and network",
        [
            timeseries(
                "Disk busy",
                "Share of time each disk was busy with I/O: near 100% it is the bottleneck.",
                Query(rate("mail_host_disk_io_time_seconds_total", HOST), device),
                unit="percentunit",
                width=8,
            ),
            timeseries(
                "Disk throughput",
                "Bytes read and written per second by disk.",
                Query(rate("mail_host_disk_read_bytes_total", HOST), f"{device} read"),
                Query(rate("mail_host_disk_written_bytes_total", HOST), f"{device} written"),
                unit="Bps",
                width=8,
            ),
            timeseries(
                "Network traffic",
                "Bytes received and sent per second by interface (loopback left out).",
                Query(rate("mail_host_network_receive_bytes_total", HOST), f"{device} in"),
                Query(rate("mail_host_network_transmit_bytes_total", HOST), f"{device} out"),
                unit="Bps",
                width=8,
            ),
            timeseries(
                "Network errors and drops",
                "Packets per second that failed or were dropped, by interface and direction: "
                "anything above 0 for long is a link or driver problem.",
                *(
                    Query(
                        rate(f"mail_host_network_{kind}_total", HOST) + " > 0",
                        f"{device} {kind.replace('_', ' ')}",
                    )
                    for kind in NETWORK_PROBLEMS
                ),
                unit="pps",
            ),
            timeseries(
                "Swap traffic",
                "Bytes swapped in and out per second: steady swapping slows everything down.",
                Query(rate("mail_host_swap_in_bytes_total", HOST), "{{instance}} in"),
                Query(rate("mail_host_swap_out_bytes_total", HOST), "{{instance}} out"),
                unit="Bps",
            ),
        ],
    )


def _host_hardware() -> Row:
    sensor = "{{instance}} {{chip}} {{sensor}}"
    headroom = (
        f"{series('mail_host_temperature_high_celsius', HOST)} - "
        f"{series('mail_host_temperature_celsius', HOST)}"
    )
    return Row(
        "Temperatures and S.M.A.R.T.",
        [
            timeseries(
                "Temperatures",
                "Sensor temperatures from the kernel's hwmon, and each disk's own.",
                Query(series("mail_host_temperature_celsius", HOST), sensor),
                Query(
                    series("mail_host_smart_temperature_celsius", HOST),
                    "{{instance}} disk {{device}}",
                ),
                unit="celsius",
            ),
            bargauge(
                "Headroom to the high threshold",
                "Degrees left before each sensor reaches its own high threshold; red under "
                f"{CONFIG.temperature_margin_celsius} °C.",
                Query(f"sort({headroom})", sensor, instant=True),
                unit="celsius",
                steps=thresholds("red", (CONFIG.temperature_margin_celsius, "green")),
                width=8,
            ),
            broken(
                "Disks failing",
                "Disks whose S.M.A.R.T. health self-assessment failed.",
                f"{series('mail_host_smart_healthy', HOST)} == 0",
                width=4,
                height=8,
            ),
            timeseries(
                "Fans",
                "Fan speeds: a fan at 0 while the others turn has stopped.",
                Query(series("mail_host_fan_rpm", HOST), sensor),
                unit="rotrpm",
                width=8,
            ),
            table(
                "Disks (S.M.A.R.T.)",
                "Each disk's health self-assessment and the counters that predict failure: "
                "reallocated, pending and uncorrectable sectors, NVMe wear.",
                Query(series("mail_host_smart_device_info", HOST)),
                Query(series("mail_host_smart_healthy", HOST)),
                Query(series("mail_host_smart_reallocated_sectors", HOST)),
                Query(series("mail_host_smart_pending_sectors", HOST)),
                Query(series("mail_host_smart_offline_uncorrectable_sectors", HOST)),
                Query(series("mail_host_smart_nvme_used_ratio", HOST)),
                Query(series("mail_host_smart_power_on_seconds", HOST)),
                columns={
                    "instance": "Host",
                    "device": "Device",
                    "model": "Model",
                    "serial": "Serial",
                    "Value #B": "Health",
                    "Value #C": "Reallocated",
                    "Value #D": "Pending",
                    "Value #E": "Uncorrectable",
                    "Value #F": "NVMe used",
                    "Value #G": "Powered on",
                },
                hidden=["Value #A", "protocol"],
                overrides=[
                    colored_cells("Health", mappings=flag(("passed", "green"), ("FAILING", "red"))),
                    *(
                        colored_cells(name, thresholds=any_is_bad())
                        for name in ("Reallocated", "Pending", "Uncorrectable")
                    ),
                    colored_cells("NVMe used", unit="percentunit", thresholds=NVME_WEAR),
                    column("Powered on", unit="s"),
                ],
                width=16,
            ),
        ],
    )


def _host_backups() -> Row:
    max_age = CONFIG.backup_max_age_hours * HOUR_SECONDS
    backup = "{{instance}} {{backup}}"
    return Row(
        "Backups",
        [
            bargauge(
                "Backup age",
                "Age of the newest file of each configured backup; red after "
                f"{CONFIG.backup_max_age_hours} h.",
                Query(
                    age("mail_host_backup_last_modified_timestamp_seconds", HOST),
                    backup,
                    instant=True,
                ),
                unit="s",
                steps=thresholds("green", (max_age, "red")),
                width=8,
            ),
            timeseries(
                "Backup size",
                "Size of the newest file of each backup: a sudden drop is worth a look.",
                Query(series("mail_host_backup_size_bytes", HOST), backup),
                unit="bytes",
                width=8,
            ),
            timeseries(
                "Backup files",
                "Files matching each backup's path or glob: 0 means none was found at all.",
                Query(series("mail_host_backup_files", HOST), backup),
                width=8,
            ),
        ],
    )


def _host_certificate_files() -> Row:
    """The certificate files the servers use (collectors.certificates), before they serve them."""
    return Row(
        "Certificate files",
        [
            bargauge(
                "Certificate file days left",
                "Days until the earliest certificate in each watched file expires, soonest "
                f"first; orange under {CONFIG.cert_expiry_warning_days}, red under "
                f"{CONFIG.cert_expiry_critical_days}. A renewed file that the server does not "
                "serve yet shows more days here than on the overview's served certificates.",
                Query(f"sort({cert_file_days_left(HOST)})", "{{instance}} {{path}}", instant=True),
                unit=DAYS,
                steps=CERT_DAYS,
                decimals=0,
                width=18,
            ),
            broken(
                "Unreadable certificate files",
                "Watched files that cannot be read or hold no PEM certificate (the reason is in "
                "the exporter's log): their expiry goes unwatched.",
                f"{series('mail_tls_cert_file_readable', HOST)} == 0",
                color="orange",
                width=6,
                height=8,
            ),
        ],
    )


def _host_mailbox_store() -> Row:
    """Dovecot's users by quota band, the fullest of them, and who is logged in."""
    full = thresholds("green", (0.8, "yellow"), (0.95, "orange"), (1, "red"))
    return Row(
        "Mailbox store (Dovecot)",
        [
            stat(
                "Users over quota",
                "Users at or past a quota limit: mail to them is refused.",
                Query(sum_by("instance", series("mail_dovecot_quota_users", HOST, 'band="over"'))),
                steps=thresholds("green", (CONFIG.users_over_quota_max + 1, "red")),
                width=4,
            ),
            timeseries(
                "Users nearly full or over",
                "Users by the highest usage ratio of any quota resource, from 80 % up.",
                Query(
                    series("mail_dovecot_quota_users", HOST, 'band=~"80_95|95_100|over"'),
                    "{{instance}} {{band}}",
                ),
                width=8,
            ),
            bargauge(
                "Fullest users",
                "The users nearest their quota (the collector's top_users), by the fuller of "
                "storage and message count.",
                Query(
                    f"sort_desc(max by (instance, user) "
                    f"({series('mail_dovecot_user_quota_ratio', HOST)}))",
                    "{{instance}} {{user}}",
                    instant=True,
                ),
                unit="percentunit",
                steps=full,
                width=12,
            ),
            timeseries(
                "Logged-in users and sessions",
                "Distinct users and their sessions by protocol, from doveadm who.",
                Query(series("mail_dovecot_users", HOST), "{{instance}} {{protocol}} users"),
                Query(series("mail_dovecot_sessions", HOST), "{{instance}} {{protocol}} sessions"),
                width=24,
            ),
        ],
    )


def host_resources() -> Json:
    return dashboard(
        "mail-host",
        "Mail: host resources",
        "The mail host itself: mail services, CPU, memory, the disks behind the mail paths, "
        "filesystems, I/O, its switch port, temperatures, S.M.A.R.T., backups, the certificate "
        "files and the Dovecot mailbox store.",
        [
            _host_services(),
            _host_paths(),
            _host_cpu_memory(),
            _host_filesystems(),
            _host_io(),
            switch_port_row(),
            _host_hardware(),
            _host_backups(),
            _host_certificate_files(),
            _host_mailbox_store(),
        ],
        [label_variable("instance", "Host", "mail_host_boot_time_seconds")],
    )
