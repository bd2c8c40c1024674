"""How long the dovecot collector's scrape takes for 2,000 users with quotas.

A private Dovecot (tests/realservers) with the quota plugin (count driver) and the
2,000 users of the suite's test (tests/test_dovecot.py: limits, and known mail for a
few hundred of them). The first run syncs every Maildir and builds its index, as the
first run on a real store would; the median of the runs after it is the figure, as a
running exporter sees it each ``interval``. Each run is a full ``quota get -A`` and
``who`` through the collector, in the scrape's thread.

Target: under 1 s for 2,000 users.

    .venv/bin/python bench/dovecot_collector.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import median, not_installed, print_table, verdict
from mail_exporter.collectors.dovecot import DovecotCollector, DovecotConfig
from tests.realservers.pki import create_pki
from tests.test_dovecot import USERS, planned_dovecot

RUNS = 5
TARGET_SECONDS = 1.0


def main() -> int:
    if not_installed("dovecot", "doveadm"):
        return 2
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        with planned_dovecot(work / "dovecot", create_pki(work / "pki")) as server:
            collector = DovecotCollector(
                DovecotConfig.model_validate(
                    {"config_file": str(server.config_path), "interval": "1ms", "timeout": "120s"}
                ),
                background=lambda work: work(),
            )
            times = []
            for _ in range(RUNS + 1):
                started = time.perf_counter()
                families = list(collector.collect())
                times.append(time.perf_counter() - started)
            series = sum(len(family.samples) for family in families)
    first, steady = times[0], median(times[1:])
    print_table(
        f"dovecot collector, {USERS} users (median of {RUNS} runs after the first)",
        [
            ("first run (s)", "scrape (s)", "series", "target (s)"),
            (f"{first:.3f}", f"{steady:.3f}", str(series), f"{TARGET_SECONDS:g}"),
        ],
    )
    return verdict(steady < TARGET_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
