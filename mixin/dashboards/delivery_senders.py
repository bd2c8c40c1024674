"""The delivery dashboard's "Who sends" row: messages and recipients per authenticated
account, the bursts MailAccountSendingBurst looks for, and each account's client
addresses as MailAccountManyClientIPs counts them."""

from __future__ import annotations

from mixin.config import CONFIG
from mixin.dashboards.shared import INSTANCE, LOG
from mixin.grafana import Query, Row, bargauge, thresholds, timeseries
from mixin.promql import rate, series, sum_by

MESSAGES = "mail_account_messages_total"
NAMED_ACCOUNTS = 'account!="other"'


def senders_row() -> Row:
    factor = CONFIG.account_burst_factor
    many = CONFIG.account_client_addresses_warning

    def sent(window: str) -> str:
        return sum_by("instance, mta, account", rate(MESSAGES, NAMED_ACCOUNTS, *LOG, window=window))

    grown = sum_by("account", rate(MESSAGES, *LOG, func="increase", window="$__range"))
    return Row(
        "Who sends",
        [
            timeseries(
                "Messages by account",
                "Messages authenticated accounts sent into the queue, per second: the busiest "
                "accounts by name, the rest as other.",
                Query(sum_by("account", rate(MESSAGES, *LOG)), "{{account}}"),
                unit="mps",
                stack=True,
                width=8,
            ),
            bargauge(
                "Top senders",
                "Messages and recipients over the time range by account.",
                Query(f"sort_desc(topk(10, {grown}))", "{{account}} messages", instant=True),
                Query(
                    "sort_desc(topk(10, "
                    + sum_by(
                        "account",
                        rate(
                            "mail_account_recipients_total",
                            *LOG,
                            func="increase",
                            window="$__range",
                        ),
                    )
                    + "))",
                    "{{account}} recipients",
                    instant=True,
                ),
                steps=thresholds("blue"),
                decimals=0,
                width=8,
            ),
            timeseries(
                "Bursts: sending against the daily average",
                "Each named account's rate over 10 minutes divided by its rate over a day: "
                f"MailAccountSendingBurst fires above {factor:g} (dashed) when the account also "
                f"sends more than {CONFIG.account_burst_min_per_second:g} messages a second.",
                Query(f"{sent('10m')} / {sent('1d')}", "{{account}}"),
                steps=thresholds("green", (factor, "red")),
                width=8,
            ),
            timeseries(
                "Client addresses per account",
                "Distinct client addresses each account authenticated from within the "
                "exporter's account_address_window (the accounts with the most): "
                f"MailAccountManyClientIPs fires above {many}.",
                Query(
                    f"max by (account) ({series('mail_account_client_addresses', INSTANCE)})",
                    "{{account}}",
                ),
                steps=thresholds("green", (many, "red")),
                width=24,
            ),
        ],
    )
