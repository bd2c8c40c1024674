"""What several mail dashboards share: the variables' matchers, how a probe's 1/0 facts
read, and the probe thresholds' colours from :mod:`mixin.config`."""

from __future__ import annotations

from mixin.config import CONFIG
from mixin.grafana import flag, higher_is_worse, lower_is_worse

TARGET = 'target=~"$target"'
INSTANCE = 'instance=~"$instance"'

UP_DOWN = flag(("up", "green"), ("down", "red"))
VERIFIED = flag(("verified", "green"), ("not verified", "red"))
STARTTLS = flag(("offered", "green"), ("missing", "red"))
PLAINTEXT_LOGIN = flag(("before TLS", "red"), ("no", "green"))

CERT_DAYS = lower_is_worse(CONFIG.cert_expiry_critical_days, CONFIG.cert_expiry_warning_days)
PROBE_SLOW = higher_is_worse(CONFIG.probe_slow_warning_seconds, CONFIG.probe_slow_critical_seconds)
