"""Collectors: one module (or package) each, which registers itself when imported.

The framework (the registry, and the set of collectors a config switches on) is
:mod:`.base`; work on an interval of its own is :mod:`.background`; every metric is a
:class:`~mail_exporter.metric_spec.MetricSpec`. Adding a collector ``NAME``:

1. ``NAME.py`` here: a class whose ``collect()`` returns fresh families built from
   ``MetricSpec`` tables, raises :class:`~.base.CollectorError` when its source cannot
   be read, takes its paths and commands as arguments (tests point them at fixtures),
   and has a ``close()`` if it owns threads.
2. In that file, its factory: ``@register_collector("NAME", HELP, NameConfig)`` on
   ``def _name(section: NameConfig, previous: Collector | None)``. ``previous`` is the
   collector a reload replaces: take over from it what must outlive it (counters).
3. Its section model ``NameConfig(CollectorSection)`` in the config, as the field
   ``NAME`` of ``CollectorsConfig`` (a test checks that sections and registry match).
4. ``NAME`` in the list below.
"""

from mail_exporter.collectors import (  # noqa: F401  (each registers itself)
    backups,
    dns,
    exim_queue,
    host,
    logs,
    postfix_queue,
    qmail_queue,
    sensors,
    services,
    smart,
)
