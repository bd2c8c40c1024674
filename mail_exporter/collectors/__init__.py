"""Collectors: one module (or package) each, which registers itself and its config section.

The framework (the registry, and the set of collectors a config switches on) is
:mod:`.base`; work on an interval of its own is :mod:`.background`; every metric is a
:class:`~mail_exporter.metric_spec.MetricSpec`. The config's ``collectors`` section is
built from the registrations (:mod:`mail_exporter.config.collectors`). Adding a
collector ``NAME`` (:mod:`.sensors` is the shortest one to copy):

1. ``NAME.py`` here, with its section model ``NameConfig(CollectorSection)``: its keys,
   their types and defaults (``enabled`` and ``timeout`` come with the base class; the
   field types are those of :mod:`mail_exporter.config.fields`).
2. In that file, a class whose ``collect()`` returns fresh families built from
   ``MetricSpec`` tables, raises :class:`~.base.CollectorError` when its source cannot
   be read, takes its paths and commands as arguments (tests point them at fixtures),
   and has a ``close()`` if it owns threads.
3. In that file, its factory: ``@register_collector("NAME", HELP, NameConfig)`` on
   ``def _name(section: NameConfig, previous: Collector | None)``. ``previous`` is the
   collector a reload replaces: take over from it what must outlive it (counters).
   The registration gives it ``collectors.NAME`` in the config and the
   ``--[no-]collector.NAME`` flag.
4. ``NAME`` in the list below, where its section is to appear in the config.

A collector left out of the list does not register: its section is then an unknown key,
which check-config reports with its line, rather than a switch that does nothing.
"""

# In the order of the config's sections (the /config page shows them so); scrapes and
# flags take the collectors by name.
# isort: off
from mail_exporter.collectors import (  # noqa: F401  (each registers itself)
    postfix_queue,
    exim_queue,
    qmail_queue,
    host,
    sensors,
    smart,
    services,
    backups,
    certificates,
    dovecot,
    logs,
    dns,
    reports,
)

# isort: on
