"""The host dashboard's switch port row: the port that serves the chosen mail host, as
snmp_exporter reads it from the switch (docs/pairing.md), beside the host's own NIC.

A port belongs to a host through the label the snmp scrape config sets on its series
(``CONFIG.switch_port_host_label``), whose value is the host's mail_exporter ``instance``:
so the dashboard's ``instance`` variable picks the host and its port alike.
"""

from __future__ import annotations

from mixin.config import CONFIG
from mixin.dashboards.shared import INSTANCE
from mixin.grafana import Query, Row, state_timeline, states, thresholds, timeseries
from mixin.paired import (
    PORT_DISCARDS,
    PORT_ERRORS,
    PORT_IN_BYTES,
    PORT_OUT_BYTES,
    PORT_STATUS,
    port_rate,
    port_utilisation,
)
from mixin.promql import RATE, rate

OF_HOST = f'{CONFIG.switch_port_host_label}=~"$instance"'
PORT_LEGEND = "{{" + CONFIG.switch_port_host_label + "}} {{instance}} {{ifName}}"
SATURATED = thresholds("green", (CONFIG.switch_port_saturated_ratio, "red"))
# IF-MIB's ifOperStatus values.
PORT_STATES = states(
    (1, "up", "green"),
    (2, "down", "red"),
    (3, "testing", "orange"),
    (5, "dormant", "orange"),
    (7, "lower layer down", "red"),
)


def _port_rate(metric: str) -> str:
    return port_rate(metric, OF_HOST, window=RATE)


def switch_port_row() -> Row:
    return Row(
        "Switch port",
        [
            timeseries(
                "Switch port traffic",
                "Bytes per second the switch port that serves the host received from it (in) "
                "and sent to it (out), from the switch's IF-MIB counters (snmp_exporter).",
                Query(_port_rate(PORT_IN_BYTES), f"{PORT_LEGEND} in"),
                Query(_port_rate(PORT_OUT_BYTES), f"{PORT_LEGEND} out"),
                unit="Bps",
                width=8,
            ),
            timeseries(
                "Host NIC traffic",
                "The host's own interfaces, for comparison with its switch port: the host's "
                "transmit is the port's in.",
                Query(
                    rate("mail_host_network_receive_bytes_total", INSTANCE),
                    "{{instance}} {{device}} in",
                ),
                Query(
                    rate("mail_host_network_transmit_bytes_total", INSTANCE),
                    "{{instance}} {{device}} out",
                ),
                unit="Bps",
                width=8,
            ),  # fmt: skip
            timeseries(
                "Switch port utilisation",
                "Share of the port's speed (ifHighSpeed) used in each direction. Dashed lines: "
                f"{CONFIG.switch_port_saturated_ratio:.0%}, where MailSwitchPortSaturated "
                "fires after a quarter of an hour.",
                Query(port_utilisation(PORT_IN_BYTES, OF_HOST, window=RATE), f"{PORT_LEGEND} in"),
                Query(port_utilisation(PORT_OUT_BYTES, OF_HOST, window=RATE), f"{PORT_LEGEND} out"),
                unit="percentunit",
                steps=SATURATED,
                width=8,
            ),
            timeseries(
                "Switch port errors and discards",
                "Packets per second the port lost to errors or discarded (full buffers), by "
                "direction: errors point at the cable or optic, discards at congestion.",
                *(
                    Query(f"{_port_rate(name)} > 0", f"{PORT_LEGEND} {name}")
                    for name in (*PORT_ERRORS, *PORT_DISCARDS)
                ),
                unit="pps",
            ),
            state_timeline(
                "Switch port status",
                "The port's operational state (ifOperStatus): up, or why not.",
                Query(f"{PORT_STATUS}{{{OF_HOST}}}", PORT_LEGEND),
                mappings=PORT_STATES,
                width=12,
            ),
        ],
    )
