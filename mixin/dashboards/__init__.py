"""Grafana dashboards for mail_exporter, one module each, built with :mod:`mixin.grafana`.

Six dashboards, each written to ``grafana/dashboards/<uid>.json`` by :func:`write_all`:

- ``mail-overview`` (:mod:`.overview`, its DNS row in :mod:`.overview_dns`): the whole fleet
  at a glance (probes, TLS, queues with Exchange's, round trip, DNS and reputation);
- ``mail-server`` (:mod:`.server`): one server's probes in detail, chosen with the ``target``
  variable;
- ``mail-delivery`` (:mod:`.delivery`): what the logs say (deliveries, delays, domains, spam,
  rejects, logins);
- ``mail-host`` (:mod:`.host`): the mail host (services, CPU, memory, disks, sensors,
  S.M.A.R.T., backups);
- ``mail-migration`` (:mod:`.migration`): the old and the new site's round trips side by
  side, and the same graphs now and ``$shift`` ago, overlaid, for before/after checks;
- ``mail-reports`` (:mod:`.reports`): what the reports mailbox says (DMARC alignment and
  who sends in our name, TLS-RPT failures, the jobs that report by mail, the collector).

What several of them show alike is in :mod:`.shared`. Every query takes its selector from
``CONFIG.matchers`` (through :mod:`mixin.promql`) and every coloured threshold from
``CONFIG``, so the dashboards agree with the alert rules. The data source is the
``datasource`` variable, so the files import into any Grafana with a Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mixin.dashboards.delivery import delivery_and_logs
from mixin.dashboards.host import host_resources
from mixin.dashboards.migration import migration_comparison
from mixin.dashboards.overview import fleet_overview
from mixin.dashboards.reports import reports_and_reputation
from mixin.dashboards.server import server_drilldown
from mixin.grafana import Json, render

BUILDERS: tuple[Callable[[], Json], ...] = (
    fleet_overview,
    server_drilldown,
    delivery_and_logs,
    host_resources,
    migration_comparison,
    reports_and_reputation,
)


def dashboards() -> dict[str, Json]:
    """Every dashboard by file name (``<uid>.json``)."""
    built = (build() for build in BUILDERS)
    return {f"{board['uid']}.json": board for board in built}


def write_all(directory: Path) -> list[Path]:
    """Write every dashboard into ``directory``; return the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in dashboards().items():
        path = directory / name
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    return written
