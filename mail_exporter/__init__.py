"""mail_exporter: a Prometheus exporter that watches mail servers.

The config is imported first, whichever module of the package is: its ``collectors``
section is built from the collectors' own sections, so :mod:`mail_exporter.config`
imports every collector, and the collectors import the config's field types. Begun
from the config, both complete; begun from a collector, the config would be built
while that collector had not registered yet.
"""

__version__ = "0.1.0"

from mail_exporter import config  # noqa: F401  (after the version: what it imports may read it)
