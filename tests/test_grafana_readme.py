"""What the README tells a Grafana user, held to the shipped dashboards: the Grafana
version their schema needs, which collectors feed each of them, the migration dashboard's
`shift` variable; and a provisioned data source that takes no existing one's place."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
GRAFANA_FOR_SCHEMA = {39: "10.4"}
"""The first Grafana release that writes each dashboard schema version."""


def grafana_notes() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Grafana")
    return readme[start : readme.index("## Alertmanager", start)]


def test_readme_names_the_grafana_version_the_dashboards_need() -> None:
    schemas = {json.loads(path.read_text())["schemaVersion"] for path in DASHBOARDS}
    assert len(schemas) == 1
    assert f"Grafana {GRAFANA_FOR_SCHEMA[schemas.pop()]} or later" in grafana_notes()


def test_readme_says_what_feeds_each_dashboard() -> None:
    rows = {
        m[1]: m[2] for m in re.finditer(r"^\| .*\(`([\w-]+)`\) \| (.+) \|$", grafana_notes(), re.M)
    }
    assert sorted(rows) == sorted(json.loads(p.read_text())["uid"] for p in DASHBOARDS)
    assert "`logs`" in rows["mail-delivery"] and "`host`" in rows["mail-host"]


def test_readme_explains_the_migration_shift() -> None:
    board = json.loads((ROOT / "grafana" / "dashboards" / "mail-migration.json").read_text())
    (shift,) = [v for v in board["templating"]["list"] if v["name"] == "shift"]
    *choices, last = [option["value"] for option in shift["options"]]
    said = f"**{shift['label']}** variable (`shift`: {', '.join(choices)} or {last})"
    assert said in grafana_notes()


def test_provisioned_data_source_takes_no_existing_ones_place() -> None:
    for path in (ROOT / "grafana/provisioning/datasources/prometheus.yml",
                 ROOT / "deploy/compose/grafana/datasources/prometheus.yml"):  # fmt: skip
        (source,) = yaml.safe_load(path.read_text())["datasources"]
        assert source["isDefault"] is False, path
        assert source["name"] != "Prometheus" and source["uid"] != "prometheus", path
        assert f"`{source['name']}` (uid `{source['uid']}`)" in grafana_notes()
