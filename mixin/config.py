"""Selectors and thresholds shared by every alert rule and dashboard: change them here only.

Thresholds start from the defaults admins already know from Checkmk's mail checks:
deferred queue 10/20 messages, active queue 200/300, Exchange transport queues 500/2000,
SMTP response 1/5 s, round trip 30/60 s; certificates warn at 20 days and page at 7
(intermediates warn at 30).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    # Label matchers added to every expression, e.g. '{job="mail"}' for one job only.
    selector: str = ""
    # The exporter-down alert fires for the jobs that scrape mail_exporter. Those that scrape
    # its /metrics are known by what they returned: mail_exporter_build_info within
    # exporter_seen_window, whatever the job's name. /probe scrapes carry no build info: their
    # jobs (`mail_probe…`, docs/scaling.md) are known by name, a regex.
    exporter_jobs: str = "mail|mail_probe.*"
    exporter_seen_window: str = "7d"

    # Where each alert's runbook_url points: this base, then `#` and the alert's name in lower
    # case. The default is the runbook the exporter serves itself at /runbook, on the address
    # the alert's `instance` label names (Prometheus's target for the exporter's own job).
    # /probe jobs name the probed server in `instance`, and a proxy or TLS change the URL:
    # then write the exporter's (or your wiki's) absolute URL here, e.g.
    # "https://mailhost.example.com:9469/runbook".
    runbook_url: str = "http://{{ $labels.instance }}/runbook"

    probe_down_for: str = "2m"
    probe_slow_warning_seconds: float = 1.0
    probe_slow_critical_seconds: float = 5.0
    probe_slow_for: str = "10m"

    cert_expiry_warning_days: int = 20
    cert_expiry_critical_days: int = 7

    # Security posture (the probe options tls_scan, revocation, smtp.relay_check and
    # smtp.enumeration_check). Accepted old versions, weak ciphers and VRFY/EXPN are settings
    # that hold until someone changes them: an hour of them is no flap. An open relay is
    # abused within minutes of being found, a revoked certificate is refused by clients
    # that check.
    posture_for: str = "1h"
    open_relay_for: str = "2m"
    cert_revoked_for: str = "5m"
    # CRL and OCSP answers are cached for days and CAs have short outages: only hours without
    # any answer leave revocation unknown for real.
    revocation_check_failing_hours: int = 6
    # A new intermediate comes from the CA's site, not from the renewal that replaces the
    # leaf: warn earlier than for the leaf.
    chain_cert_expiry_warning_days: int = 30
    chain_cert_expiry_critical_days: int = 7

    queue_deferred_warning: int = 10
    queue_deferred_critical: int = 20
    queue_active_warning: int = 200
    queue_active_critical: int = 300
    queue_for: str = "15m"
    queue_growth_horizon_hours: int = 4
    queue_oldest_warning_seconds: int = 3600
    queue_oldest_critical_seconds: int = 7200
    # Checkmk's Exchange queue defaults (windows_exporter); only the dashboards use them so far.
    exchange_queue_warning: int = 500
    exchange_queue_critical: int = 2000

    roundtrip_slow_warning_seconds: float = 30.0
    roundtrip_slow_critical_seconds: float = 60.0
    roundtrip_stale_seconds: int = 1800
    # Shares of round trips lost or delivered to junk; only the dashboards use them so far.
    roundtrip_loss_warning_ratio: float = 0.01
    roundtrip_loss_critical_ratio: float = 0.05
    # Moving mail to a hosted service: round-trip routes name their site (the route's `site:`
    # key, any words: onprem, m365, gmail). The routes of the new site are compared with the
    # baseline site as a whole over a day, so that a slow hour or a greylisted morning is
    # no verdict; a new route is slower when its transit p95 is more than the ratio times
    # the baseline's, and above the floor: mail seen within a few seconds is instant to
    # people, whatever the baseline (a local loop takes well under a second).
    migration_baseline_site: str = "onprem"
    migration_new_site: str = "m365"
    migration_window: str = "1d"
    migration_slower_ratio: float = 1.5
    migration_slower_min_seconds: float = 5.0
    migration_slower_for: str = "1h"

    disk_fill_horizon_hours: int = 24
    disk_fill_trend_hours: int = 6  # the trend the disk-filling prediction extends
    disk_fill_max_free_ratio: float = 0.4  # predict only for filesystems less free than this
    disk_free_warning_ratio: float = 0.10
    inodes_free_warning_ratio: float = 0.10
    temperature_margin_celsius: float = 5.0
    backup_max_age_hours: int = 26
    # NVMe "percentage used": the vendor's endurance estimate is spent at 100%.
    nvme_used_warning_ratio: float = 0.8
    nvme_used_critical_ratio: float = 1.0
    # Dovecot users at or past their quota (the collector's "over" band) tolerated: some
    # sites keep a full archive account or two, and raise this for them.
    users_over_quota_max: int = 0

    bounce_ratio_warning: float = 0.10
    defer_ratio_warning: float = 0.20
    auth_failures_per_second_warning: float = 1.0
    spam_reject_spike_factor: float = 3.0
    spam_reject_min_per_second: float = 0.1  # fewer rejects than this are no spike
    # Refusals quoting a receiving domain's reply, counted per domain over this window.
    remote_refusals_window_minutes: int = 30
    remote_reputation_refusals_warning: int = 10
    remote_reputation_refusals_critical: int = 100
    remote_reputation_for: str = "15m"
    # Throttling clears by itself as the queue retries: only a lasting one is worth a look.
    remote_rate_limited_refusals_warning: int = 20
    remote_rate_limited_for: str = "1h"
    # An account sending this many times its own daily average over 10 minutes, and at
    # least this many messages a second (30 in 10 minutes), is sending for someone else.
    account_burst_factor: float = 10.0
    account_burst_min_per_second: float = 0.05
    # Distinct client addresses an account logged in from within the exporter's
    # account_address_window (1h by default): roaming users show a handful.
    account_client_addresses_warning: int = 10

    dns_for: str = "15m"  # DNS facts come from passes every 15 minutes
    dns_stale_seconds: int = 3600  # no finished pass for this long: stale
    dkim_min_key_bits: int = 1024  # RFC 8301: verifiers must refuse smaller keys
    dkim_good_key_bits: int = 2048  # the dashboards colour keys from this size green
    dns_errors_for: str = "1h"  # lookups without a verdict (blocklists, other checks) this long

    # The mailbox store (imap.mailboxes on an imap module). Quota: Checkmk's check_mailboxes
    # and Nagios' check_imap_quota warn at 90 %. Freshness: each mailbox's own newest_max_age
    # (exported as mail_mailbox_newest_max_age_seconds) is the threshold; the for: only rides
    # out a probe or two that could not read it.
    mailbox_quota_warning_ratio: float = 0.90
    mailbox_quota_for: str = "30m"
    mailbox_stale_for: str = "15m"

    # The reports mailbox (collectors.reports). A DMARC or TLS-RPT report covers a day and
    # each reporter sends one a day, at an hour of its own: the alerts weigh what the reports
    # of the last `reports_window` said, which no pass timing can flap. DMARC fails for
    # forwarded and mailing-list mail too (a few in a hundred): a share above that, and not
    # a handful of messages, is a sender of ours out of alignment or a spoofing campaign.
    reports_window: str = "1d"
    reports_for: str = "15m"
    dmarc_unaligned_warning_ratio: float = 0.10
    dmarc_unaligned_min_messages: int = 20
    # A source IP sending unaligned mail that had none a day and a week ago: a new spoofer,
    # or a new service sending for us that nobody set up DKIM or SPF for.
    dmarc_new_source_min_messages: int = 10
    dmarc_new_source_lookback: str = "7d"
    # TLS-RPT reporters are the big providers: a few failed sessions a day are real.
    tlsrpt_failure_warning_ratio: float = 0.05
    tlsrpt_failure_min_sessions: int = 5
    # A nightly job's report mail: a day and two hours of slack, as for backup files.
    notification_success_max_age_hours: int = 26
    notification_for: str = "10m"
    # Paired exporters (docs/pairing.md): they run as jobs of their own, so the selector
    # above, which is mail_exporter's, does not apply to their series.
    # Switch ports (snmp_exporter, module if_mib): the series of a port that serves a mail
    # host carry its name in this label, set by the scrape config's metric relabeling.
    switch_port_host_label: str = "mail_host"
    switch_port_down_for: str = "2m"
    # Errors on a healthy link are rare: one a second for a quarter of an hour is a cable,
    # an optic or a duplex mismatch.
    switch_port_errors_per_second: float = 1.0
    switch_port_errors_for: str = "15m"
    # Share of the port's speed (ifHighSpeed) used in either direction, over 15 minutes.
    switch_port_saturated_ratio: float = 0.9
    switch_port_saturated_for: str = "15m"
    # Exchange (windows_exporter's exchange and service collectors): the services whose
    # stop stops mail (lower case, as windows_exporter names them), and its database states
    # (the guide's task through the textfile collector).
    exchange_services: str = (
        "msexchangetransport|msexchangefrontendtransport|msexchangeis|msexchangeadtopology"
        "|msexchangedelivery|msexchangesubmission"
    )
    exchange_service_down_for: str = "5m"
    exchange_database_dismounted_for: str = "5m"
    # rspamd: the share of scanned messages rejected over the last half hour against the
    # last day; a move of this much either way is a filter change or a spam wave, if at
    # least the minimum of messages is scanned (fewer are no ratio to speak of).
    spam_filter_reject_shift: float = 0.2
    spam_filter_min_scans_per_second: float = 0.05
    spam_filter_shift_for: str = "15m"

    def matchers(self, *extra: str) -> str:
        """``{selector, extra...}`` for a metric selector."""
        inner = ",".join(part for part in (self.selector.strip("{}"), *extra) if part)
        return "{" + inner + "}" if inner else ""


CONFIG = Config()
