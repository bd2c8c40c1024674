"""The alert on rspamd's own counters (its controller's /metrics, docs/pairing.md): the
share of mail it rejects moving away from the day's.

A reject ratio has no right value: it follows the site's mail. What matters is a sudden
change. Up is a spam wave or a rule, map or score gone wrong and rejecting real mail;
down is a filter that stopped working (a dead DNS resolver leaves every RBL silent).
"""

from __future__ import annotations

from mixin.config import Config
from mixin.paired import RSPAMD_ACTIONS, RSPAMD_REJECT
from mixin.rules.alert import Alert, Example, fired, selector

RSPAMD_LABELS = {"instance": "mailhost:11334", "job": "rspamd"}
SHIFT_WINDOW = "30m"
BASELINE_WINDOW = "1d"
# The examples: 30 clean messages a minute, rejects starting after 100 minutes.
EXAMPLE_MINUTES = 140
CHANGE_AT_MINUTE = 100


def _reject_ratio(window: str) -> str:
    by = "sum by (instance, job)"
    rejected = f"{by} (rate({RSPAMD_ACTIONS}{{{RSPAMD_REJECT}}}[{window}]))"
    return f"{rejected} / {by} (rate({RSPAMD_ACTIONS}[{window}]))"


def _actions(kind: str, values: str) -> tuple[str, str]:
    return f'{RSPAMD_ACTIONS}{{{selector(RSPAMD_LABELS)},type="{kind}"}}', values


def spam_filter_alerts(c: Config) -> list[Alert]:
    scans = f"sum by (instance, job) (rate({RSPAMD_ACTIONS}[{SHIFT_WINDOW}]))"
    clean = _actions("no action", f"0+30x{EXAMPLE_MINUTES}")
    return [
        Alert(
            "MailSpamFilterRejectShift",
            f"abs({_reject_ratio(SHIFT_WINDOW)} - {_reject_ratio(BASELINE_WINDOW)})"
            f" > {c.spam_filter_reject_shift:g}"
            f" and {scans} > {c.spam_filter_min_scans_per_second:g}",
            "warning",
            "The spam filter's reject ratio moved suddenly.",
            "rspamd on {{ $labels.instance }} rejects a share of mail that differs by "
            "{{ $value | humanizePercentage }} from its share over the last day "
            f"(threshold {c.spam_filter_reject_shift:.0%}).",
            Example(
                [
                    clean,
                    _actions(
                        "reject", f"0x{CHANGE_AT_MINUTE} 30+30x{EXAMPLE_MINUTES - CHANGE_AT_MINUTE}"
                    ),
                ],
                [fired(RSPAMD_LABELS, "warning")],
            ),
            Example([clean, _actions("reject", f"0+3x{EXAMPLE_MINUTES}")]),
            for_=c.spam_filter_shift_for,
            eval_minutes=EXAMPLE_MINUTES - 5,
        ),
    ]
