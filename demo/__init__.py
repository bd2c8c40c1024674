"""A local demo without containers: ``make demo`` runs the test suite's real Postfix and
Dovecot (:mod:`tests.realservers`, the one copy of them), the exporter probing them,
Prometheus with the shipped rules and Alertmanager with a webhook that prints each
notification, all on loopback and free ports. ``make demo-break-…`` breaks something on
purpose, ``make demo-repair`` undoes it, ``make demo-stop`` (or Ctrl-C) removes it all.

The demo imports the servers from ``tests/`` rather than having a copy: they are what the
suite runs the exporter against every day, and a demo needs nothing else of them. It runs
from a checkout, like the suite, and needs root, as Postfix and Dovecot do. Only the
alerting timings differ from a real site (:mod:`demo.configs`).
"""
