"""The delivery dashboard's rows from the paired exporters' own counters (docs/pairing.md):
rspamd's controller (spam filter effectiveness) and Dovecot's OpenMetrics (logins, IMAP
commands, deliveries).

They come from jobs of their own, so the dashboard's ``instance`` variable (mail_exporter's)
does not filter them; each legend names the ``instance`` a series comes from.
"""

from __future__ import annotations

from mixin.config import CONFIG
from mixin.grafana import Query, Row, timeseries
from mixin.paired import (
    DOVECOT_AUTH_FAILURE,
    DOVECOT_AUTH_SUCCESS,
    DOVECOT_DELIVERY,
    DOVECOT_IMAP_COMMAND_SECONDS,
    DOVECOT_IMAP_COMMANDS,
    PER_COMMAND,
    PER_REPLY,
    RSPAMD_ACTIONS,
    RSPAMD_HAM,
    RSPAMD_REJECT,
    RSPAMD_SCAN_SECONDS,
    RSPAMD_SCANNED,
    RSPAMD_SPAM,
)
from mixin.promql import RATE, increase, sum_by


def _rate(metric: str, *matchers: str) -> str:
    """``rate()`` of a paired exporter's series: no mail_exporter selector."""
    selector = "{" + ",".join(matchers) + "}" if matchers else ""
    return f"rate({metric}{selector}[{RATE}])"


def spam_filter_row() -> Row:
    per_instance = "sum by (instance)"
    return Row(
        "Spam filter effectiveness (rspamd)",
        [
            timeseries(
                "rspamd actions",
                "Messages per second by the action rspamd took: reject, soft reject (a "
                "temporary refusal), rewrite subject, add header, greylist, no action.",
                Query(sum_by("instance, type", _rate(RSPAMD_ACTIONS)), "{{instance}} {{type}}"),
                unit="cps",
                stack=True,
                width=8,
            ),
            timeseries(
                "Spam and ham",
                "Share of scanned messages rspamd judged spam and ham, and the share it "
                f"rejected: a reject share moving by {CONFIG.spam_filter_reject_shift:.0%} from "
                "the day's fires MailSpamFilterRejectShift.",
                Query(
                    f"{per_instance} ({_rate(RSPAMD_SPAM)}) / {per_instance} "
                    f"({_rate(RSPAMD_SCANNED)})",
                    "{{instance}} spam",
                ),
                Query(
                    f"{per_instance} ({_rate(RSPAMD_HAM)}) / {per_instance} "
                    f"({_rate(RSPAMD_SCANNED)})",
                    "{{instance}} ham",
                ),
                Query(
                    f"{per_instance} ({_rate(RSPAMD_ACTIONS, RSPAMD_REJECT)}) / {per_instance} "
                    f"({_rate(RSPAMD_ACTIONS)})",
                    "{{instance}} rejected",
                ),
                unit="percentunit",
                width=8,
            ),  # fmt: skip
            timeseries(
                "Scan time",
                "rspamd's average time to scan a message.",
                Query(RSPAMD_SCAN_SECONDS, "{{instance}}"),
                unit="s",
                width=8,
            ),
            timeseries(
                "Round trip: arrivals in junk",
                "Test messages of the round trip delivered to the junk mailbox per interval, "
                "beside the filter's actions: the filter's mistakes as a user sees them.",
                Query(sum_by("route", increase("mail_roundtrip_junk_total")), "{{route}} in junk"),
                bars=True,
                width=24,
            ),
        ],
        collapsed=True,
    )


def dovecot_row() -> Row:
    return Row(
        "Dovecot's own counters",
        [
            timeseries(
                "Logins (Dovecot)",
                "Logins per second that passed and failed, any protocol, as Dovecot counts them "
                "(its auth_request_finished events).",
                Query(_rate(DOVECOT_AUTH_SUCCESS), "{{instance}} passed"),
                Query(_rate(DOVECOT_AUTH_FAILURE), "{{instance}} failed"),
                unit="cps",
                width=8,
            ),
            timeseries(
                "IMAP commands",
                "IMAP commands per second by name.",
                Query(
                    sum_by("instance, cmd_name", _rate(DOVECOT_IMAP_COMMANDS, PER_COMMAND)),
                    "{{instance}} {{cmd_name}}",
                ),
                unit="cps",
                stack=True,
                width=8,
            ),  # fmt: skip
            timeseries(
                "IMAP command time",
                "Average time of each IMAP command by name: a slow SELECT or FETCH is a slow "
                "mailbox store.",
                Query(
                    f"{_rate(DOVECOT_IMAP_COMMAND_SECONDS, PER_COMMAND)} / "
                    f"{_rate(DOVECOT_IMAP_COMMANDS, PER_COMMAND)}",
                    "{{instance}} {{cmd_name}}",
                ),
                unit="s",
                width=8,
            ),  # fmt: skip
            timeseries(
                "IMAP replies other than OK",
                "IMAP commands per second that ended NO or BAD, by name.",
                Query(
                    _rate(DOVECOT_IMAP_COMMANDS, PER_REPLY, 'tagged_reply_state!="OK"') + " > 0",
                    "{{instance}} {{cmd_name}} {{tagged_reply_state}}",
                ),
                unit="cps",
                width=8,
            ),
            timeseries(
                "Deliveries into mailboxes",
                "Messages per second Dovecot delivered (LMTP, dovecot-lda).",
                Query(_rate(f"{DOVECOT_DELIVERY}_count"), "{{instance}}"),
                unit="cps",
                width=8,
            ),
            timeseries(
                "Delivery time",
                "Median and 95th percentile of the time Dovecot took to deliver a message.",
                *(
                    Query(
                        f"histogram_quantile({q}, sum by (instance, le) "
                        f"({_rate(f'{DOVECOT_DELIVERY}_bucket')}))",
                        f"{{{{instance}}}} p{round(q * 100)}",
                    )
                    for q in (0.5, 0.95)
                ),
                unit="s",
                width=8,
            ),
        ],
        collapsed=True,
    )
