"""Alerts on the mailbox store, from the IMAP probe's mailbox checks (``imap.mailboxes``): a
mailbox nearly over quota, and an archive or shared mailbox whose newest message is older
than the ``newest_max_age`` configured for it (exported beside the dates, so the rules need
no per-mailbox config)."""

from __future__ import annotations

from mixin.config import Config
from mixin.promql import age
from mixin.rules.alert import Alert, Example, fired, ramp, steady

MAILBOX_LABELS = {"target": "imap1", "module": "imap_mailboxes", "protocol": "imap",
                  "instance": "mailhost:9469", "job": "mail"}  # fmt: skip


def _series(metric: str, mailbox: str, kind: str, **extra: str) -> str:
    """An example series; an empty ``kind`` is no label, as Prometheus stores it."""
    labels = {**MAILBOX_LABELS, "mailbox": mailbox, **({"kind": kind} if kind else {}), **extra}
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _stale(c: Config, name: str, kind: str, mailbox: str, what: str) -> Alert:
    newest = "mail_mailbox_newest_message_timestamp_seconds"
    max_age = "mail_mailbox_newest_max_age_seconds"
    labels = {**MAILBOX_LABELS, "mailbox": mailbox, "kind": kind}
    expected = (_series(max_age, mailbox, kind), steady(1800))
    of_kind = f'kind="{kind}"'
    return Alert(
        name,
        # Same labels on both sides: each mailbox against its own expectation.
        f"{age(newest, of_kind, config=c)} > {max_age}{c.matchers(of_kind)}",
        "warning", f"{what} has received nothing for longer than it should.",
        "The newest message in {{ $labels.mailbox }} on {{ $labels.target }} arrived "
        "{{ $value | humanizeDuration }} ago, longer than its newest_max_age: whatever "
        "copies mail there has stopped.",
        Example([(_series(newest, mailbox, kind), steady(0)), expected],
                [fired(labels, "warning")]),
        Example([(_series(newest, mailbox, kind), ramp(0, 60)), expected]),
        for_=c.mailbox_stale_for,
        also=(
            # A mailbox of the other kind, or without an expectation, is not this alert's.
            Example([(_series(newest, mailbox, "other"), steady(0)),
                     (_series(max_age, mailbox, "other"), steady(1800))]),
            Example([(_series(newest, mailbox, kind), steady(0))]),
        ),
    )  # fmt: skip


def mailbox_alerts(c: Config) -> list[Alert]:
    usage, limit = "mail_mailbox_quota_usage", "mail_mailbox_quota_limit"
    labels = {**MAILBOX_LABELS, "mailbox": "INBOX", "resource": "storage_bytes"}
    inbox_usage = _series(usage, "INBOX", "", resource="storage_bytes")
    inbox_limit = _series(limit, "INBOX", "", resource="storage_bytes")
    ratio = c.mailbox_quota_warning_ratio
    return [
        Alert(
            "MailboxQuotaNearlyFull",
            f"{usage}{c.matchers()} / {limit}{c.matchers()} >= {ratio:g}",
            "warning", "A mailbox is nearly over its quota.",
            "{{ $labels.mailbox }} on {{ $labels.target }} uses {{ $value | humanizePercentage }} "
            "of its {{ $labels.resource }} quota: once full, new mail bounces or waits.",
            Example([(inbox_usage, steady(9.5e6)), (inbox_limit, steady(1e7))],
                    [fired(labels, "warning")]),
            Example([(inbox_usage, steady(5e6)), (inbox_limit, steady(1e7))]),
            for_=c.mailbox_quota_for,
            also=(
                # Filling up just now: not yet for the whole for: window.
                Example([(inbox_usage, "5e6x60 9.5e6x60"), (inbox_limit, steady(1e7))]),
            ),
        ),
        _stale(c, "MailArchiveStale", "archive", "Archive", "An archive mailbox"),
        _stale(c, "MailSharedMailboxStale", "shared", "Support", "A shared mailbox"),
    ]  # fmt: skip
