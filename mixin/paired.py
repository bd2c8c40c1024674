"""The series of the exporters mail_exporter pairs with (docs/pairing.md), in one place for
the rules and the dashboards that read them.

Each runs as a Prometheus job of its own, so none of these selectors takes
``CONFIG.selector``: that one filters mail_exporter's series.

- snmp_exporter 0.21, module ``if_mib`` of deploy/pairing/snmp.yml: IF-MIB per switch port,
  labelled ``ifIndex``, ``ifAlias``, ``ifDescr``, ``ifName``; the scrape config adds the
  mail host a port serves (``CONFIG.switch_port_host_label``).
- windows_exporter: the ``exchange`` collector's transport queues (docs/collector.exchange.md)
  and the ``service`` collector's states; Exchange's database states come from the guide's
  task through its ``textfile`` collector.
- Dovecot 2.3's own OpenMetrics (the ``metric`` blocks of deploy/pairing/dovecot-metrics.conf).
- rspamd 3.4's controller ``/metrics``.
"""

from __future__ import annotations

from mixin.config import CONFIG, Config

# --- Switch ports (snmp_exporter) -------------------------------------------------------

PORT_IN_BYTES = "ifHCInOctets"
PORT_OUT_BYTES = "ifHCOutOctets"
PORT_SPEED_MEGABITS = "ifHighSpeed"
PORT_STATUS = "ifOperStatus"  # 1 up; 2 down, 3 testing, 5 dormant, 7 lower layer down
PORT_UP = 1
PORT_ERRORS = ("ifInErrors", "ifOutErrors")
PORT_DISCARDS = ("ifInDiscards", "ifOutDiscards")
BITS_PER_BYTE = 8
BITS_PER_MEGABIT = 1_000_000


def port(metric: str, *matchers: str, config: Config = CONFIG) -> str:
    """``metric`` of the switch ports that serve a mail host (its label set), ``matchers``
    further."""
    inner = ",".join((f'{config.switch_port_host_label}!=""', *matchers))
    return f"{metric}{{{inner}}}"


def port_rate(metric: str, *matchers: str, window: str, config: Config = CONFIG) -> str:
    return f"rate({port(metric, *matchers, config=config)}[{window}])"


def port_utilisation(metric: str, *matchers: str, window: str, config: Config = CONFIG) -> str:
    """The share of a port's speed that ``metric`` (a byte counter) used over ``window``;
    ports that report no speed (0) are left out."""
    bits = f"{port_rate(metric, *matchers, window=window, config=config)} * {BITS_PER_BYTE}"
    speed = port(PORT_SPEED_MEGABITS, *matchers, config=config)
    return f"{bits} / ({speed} * {BITS_PER_MEGABIT} > 0)"


# --- Exchange (windows_exporter) --------------------------------------------------------

# windows_exporter reports each transport queue per priority; this instance is Exchange's
# own total.
EXCHANGE_TOTAL = 'name="total_excluding_priority_none"'
EXCHANGE_QUEUE_PREFIX = "windows_exchange_transport_queues_"
# Exchange's transport queues as the queue names the Postfix and Exim panels use: mail
# being handed on now is `active`, mail waiting for a retry `deferred`; the unreachable
# (no route) and poison (crashed the transport) queues keep their own names.
EXCHANGE_QUEUES = {
    "active": (
        "external_active_remote_delivery",
        "internal_active_remote_delivery",
        "active_mailbox_delivery",
    ),
    "deferred": ("retry_mailbox_delivery",),
    "unreachable": ("unreachable",),
    "poison": ("poison",),
}
EXCHANGE_MTA = "exchange"
SERVICE_STATE = "windows_service_state"
EXCHANGE_DATABASE_MOUNTED = "mail_exchange_database_mounted"

# --- Dovecot's own metrics --------------------------------------------------------------

DOVECOT_AUTH_SUCCESS = "dovecot_auth_success_total"
DOVECOT_AUTH_FAILURE = "dovecot_auth_failure_total"
DOVECOT_IMAP_COMMANDS = "dovecot_imap_command_total"
DOVECOT_IMAP_COMMAND_SECONDS = "dovecot_imap_command_duration_seconds_total"
DOVECOT_DELIVERY = "dovecot_mail_delivery"  # a histogram in seconds
# Dovecot writes a series per level of `group_by`: one per command (no reply state) and one
# per command and reply state. Picking one level keeps sums from counting twice.
PER_COMMAND = 'tagged_reply_state=""'
PER_REPLY = 'tagged_reply_state!=""'

# --- rspamd -----------------------------------------------------------------------------

RSPAMD_ACTIONS = "rspamd_actions_total"  # label `type`: reject, soft reject, ...
RSPAMD_SCANNED = "rspamd_scanned_total"
RSPAMD_SPAM = "rspamd_spam_total"
RSPAMD_HAM = "rspamd_ham_total"
RSPAMD_SCAN_SECONDS = "rspamd_scan_time_average"
RSPAMD_REJECT = 'type="reject"'
