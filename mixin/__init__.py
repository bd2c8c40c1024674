"""The monitoring mixin: alert rules, recording rules and Grafana dashboards generated from code.

``python -m mixin`` writes ``alerting/*.yml`` and ``grafana/dashboards/*.json`` from
:mod:`mixin.config` (selectors and thresholds, the one source of truth both share),
:mod:`mixin.rules` and :mod:`mixin.dashboards`; a test fails when the committed files
differ from what the code generates.
"""
