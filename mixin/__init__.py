"""The monitoring mixin: alert rules, recording rules and Grafana dashboards generated from code.

``python -m mixin`` writes ``alerting/*.yml`` and ``grafana/dashboards/*.json``; a test fails
when the committed files differ from what the code generates. The parts:

- :mod:`mixin.config`: selectors and thresholds, the one source of truth rules and dashboards
  share;
- :mod:`mixin.promql`: the PromQL both write (selectors, range functions, the recording
  rules' names);
- :mod:`mixin.rules`: the alert rules, one module per area, each alert with its promtool
  cases, and the recording rules;
- :mod:`mixin.grafana`: Grafana's panels, rows, variables and dashboards as plain dicts;
- :mod:`mixin.dashboards`: one module per dashboard;
- :mod:`mixin.generate`: writes the files.
"""
