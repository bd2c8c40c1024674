"""Every recorded log through the parsers, rendered: the exposition stays what it is, line for line.

The log collector's hot path (the dispatcher, the Postfix handlers, the counters behind
them) is worth rewriting for speed, and such a rewrite must not move a single count.
This pins what the parsers make of every recorded sample in ``tests/fixtures/logs``
(each file through the format it was written in, into counters of its own): every
counter, every histogram bucket with its sum, the domain, refusal and account series,
rendered as ``/metrics`` renders them, against ``tests/fixtures/logs/recorded.prom``.
Series are compared as sorted lines, so a rewrite may count in another order, not to
other values. A change that means to change the output regenerates the file::

    .venv/bin/python tests/test_logs_recorded_exposition.py > tests/fixtures/logs/recorded.prom

and the diff shows every series that moved.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import CollectorRegistry, Metric
from prometheus_client.exposition import generate_latest

from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.dispatch import LineDispatcher
from mail_exporter.collectors.logs.render import Snapshot, families

FIXTURES = Path(__file__).parent / "fixtures" / "logs"
EXPECTED = FIXTURES / "recorded.prom"
RECORDED = (
    ("postfix_real.log", "syslog"), ("postfix_expiry_table.log", "syslog"),
    ("postfix_refusals.log", "syslog"), ("exim_syslog.log", "syslog"),
    ("dovecot_real.log", "dovecot"), ("dovecot_pam.log", "dovecot"), ("exim_mainlog", "exim"),
    ("exim_rejectlog", "exim"), ("exim_tls_refusals", "exim"),
)  # fmt: skip


class _Counted:
    """The collector's families of one set of counters, without followers."""

    def __init__(self, counters: LogCounters) -> None:
        self.counters = counters

    def collect(self) -> Iterable[Metric]:
        return list(families(Snapshot.take(self.counters), []))


def recorded_exposition() -> str:
    """Each recorded log's samples, sorted, after a ``# file (format)`` line (HELP and TYPE
    are left out: what a metric's help says is not what was counted)."""
    parts = []
    for name, log_format in RECORDED:
        counters = LogCounters(top_domains=10)
        feed = LineDispatcher(counters).feeder(log_format)
        for line in (FIXTURES / name).read_text().splitlines():
            feed(line)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Counted(counters))
        samples = [line for line in generate_latest(registry).decode().splitlines(True)
                   if not line.startswith("#")]  # fmt: skip
        parts.append(f"# {name} ({log_format})\n" + "".join(sorted(samples)))
    return "".join(parts)


def test_recorded_logs_render_as_recorded() -> None:
    assert recorded_exposition().splitlines() == EXPECTED.read_text().splitlines()


if __name__ == "__main__":
    print(recorded_exposition(), end="")
