"""Alerts on the switch port that serves each mail host (snmp_exporter's ``if_mib``,
docs/pairing.md): down, erring, saturated.

Only ports whose series carry the mail host's name (``CONFIG.switch_port_host_label``, set
by the scrape config) are watched: a switch has dozens of ports nobody here answers for.
"""

from __future__ import annotations

from mixin.config import Config
from mixin.paired import (
    PORT_ERRORS,
    PORT_IN_BYTES,
    PORT_OUT_BYTES,
    PORT_SPEED_MEGABITS,
    PORT_STATUS,
    PORT_UP,
    port,
    port_rate,
    port_utilisation,
)
from mixin.rules.alert import Alert, Example, fired, ramp, selector, steady

# A mail host's port as snmp_exporter labels it, on the switch Prometheus scrapes.
PORT_LABELS = {
    "ifAlias": "mail server",
    "ifDescr": "GigabitEthernet1/0/7",
    "ifIndex": "10107",
    "ifName": "Gi1/0/7",
    "instance": "switch1.example.com",
    "job": "snmp",
    "mail_host": "mailhost:9469",
}
OTHER_PORT = {key: value for key, value in PORT_LABELS.items() if key != "mail_host"}
WHICH_PORT = (
    "Port {{ $labels.ifName }} of switch {{ $labels.instance }}, which serves "
    "{{ $labels.mail_host }},"
)
GIGABIT = 1000  # ifHighSpeed, megabits per second
BYTES_PER_MINUTE_AT_LINE_RATE = GIGABIT * 1_000_000 / 8 * 60


def _series(metric: str) -> str:
    return f"{metric}{{{selector(PORT_LABELS)}}}"


def switch_port_alerts(c: Config) -> list[Alert]:
    labels = PORT_LABELS
    errors = " + ".join(port_rate(name, window="5m", config=c) for name in PORT_ERRORS)
    saturated = c.switch_port_saturated_ratio
    speed = (_series(PORT_SPEED_MEGABITS), steady(GIGABIT))
    return [
        Alert(
            "MailSwitchPortDown",
            f"{port(PORT_STATUS, config=c)} != {PORT_UP}",
            "critical",
            "The switch port of a mail host is down.",
            WHICH_PORT + " is not up (ifOperStatus {{ $value }}: 2 down, 7 lower layer down).",
            Example([(_series(PORT_STATUS), steady(2))], [fired(labels, "critical")]),
            Example([(_series(PORT_STATUS), steady(PORT_UP))]),
            for_=c.switch_port_down_for,
            # Ports that serve no mail host are someone else's.
            also=(Example([(f"{PORT_STATUS}{{{selector(OTHER_PORT)}}}", steady(2))]),),
        ),
        Alert(
            "MailSwitchPortErrors",
            f"{errors} > {c.switch_port_errors_per_second:g}",
            "warning",
            "The switch port of a mail host counts errors.",
            WHICH_PORT + ' counts {{ $value | printf "%.1f" }} errored packets a second '
            f"(threshold {c.switch_port_errors_per_second:g}).",
            Example(
                [(_series(PORT_ERRORS[0]), ramp(0, 120)), (_series(PORT_ERRORS[1]), steady(0))],
                [fired(labels, "warning")],
            ),
            Example([(_series(PORT_ERRORS[0]), ramp(0, 6)), (_series(PORT_ERRORS[1]), ramp(0, 6))]),
            for_=c.switch_port_errors_for,
        ),
        Alert(
            "MailSwitchPortSaturated",
            f"{port_utilisation(PORT_IN_BYTES, window='15m', config=c)} > {saturated:g}"
            f" or {port_utilisation(PORT_OUT_BYTES, window='15m', config=c)} > {saturated:g}",
            "warning",
            "The switch port of a mail host runs at its speed.",
            WHICH_PORT + " carries {{ $value | humanizePercentage }} of its speed in one "
            f"direction (threshold {saturated:.0%}).",
            Example(
                [
                    speed,
                    (_series(PORT_IN_BYTES), ramp(0, BYTES_PER_MINUTE_AT_LINE_RATE / 2)),
                    (_series(PORT_OUT_BYTES), ramp(0, BYTES_PER_MINUTE_AT_LINE_RATE * 0.95)),
                ],
                [fired(labels, "warning")],
            ),
            Example(
                [
                    speed,
                    (_series(PORT_IN_BYTES), ramp(0, BYTES_PER_MINUTE_AT_LINE_RATE / 2)),
                    (_series(PORT_OUT_BYTES), ramp(0, BYTES_PER_MINUTE_AT_LINE_RATE / 2)),
                ]
            ),
            for_=c.switch_port_saturated_for,
        ),
    ]
