"""Collectors: one module (or package) each, which registers itself when imported.

The framework, the registry and the set of collectors a config switches on are in
:mod:`.base`. Adding a collector: a module here whose section model is a
``CollectorSection`` and whose factory is decorated with
``@register_collector(NAME, HELP, SectionModel)``, a field ``NAME`` of that model in the
config's ``CollectorsConfig``, and its name in the list below (a test checks that the
registry and the config's sections match).
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
