"""Who sends, on the logs of a real Postfix whose SASL logins go through a real Dovecot.

Three accounts (added to the session Dovecot's passwd-file, which Dovecot reads again
when it changes) submit known numbers of messages with known numbers of recipients from
several loopback source addresses; the per-account counters and the distinct address
gauge must be exact. The exposition then goes through promtool.

The same counters then feed a ``promtool test rules`` case against the shipped rules
file: the series' names and label sets are the collector's own (plus the ``instance``
and ``job`` labels a scrape attaches), and their values grow by a multiple of each
account's real count every minute for a day, then the busiest account's growth is
multiplied for an hour. MailAccountSendingBurst
must fire for that account alone, with the shipped annotations rendered for its labels.
Every steady account's baseline is kept above the alert's floor, so their silence comes
from the comparison with their own baseline, not from sending too little.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mail_exporter.collectors.logs.collector import LogsCollector
from mail_exporter.collectors.logs.config import LogsConfig
from mixin.config import CONFIG
from tests.promtool import check_shipped_alert, shipped_annotations, shipped_rules
from tests.realservers.dovecot import Dovecot
from tests.realservers.postfix import Postfix, _any_cert
from tests.test_logs_real_servers import (
    check_with_promtool,
    quiet,
    samples,
    wait_until_following,
)

pytestmark = pytest.mark.integration

PASSWORD = "sender-secret"
# account → (source address of each message, recipients per message)
PLAN = {
    "sender-a@test.local": (("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"), 2),
    "sender-b@test.local": (("127.0.0.2", "127.0.0.2"), 1),
    "sender-c@test.local": (("127.0.0.5",), 3),
}
RECIPIENTS = ("sender-a@test.local", "sender-b@test.local", "sender-c@test.local")

BURST_ALERT = "MailAccountSendingBurst"
SCRAPE_LABELS = {"instance": "127.0.0.1:9469", "job": "mail"}  # what Prometheus attaches
# Each account's real count sent this many times a minute for a day; the burst multiplies
# the bursting account's rate by ten times the alert's factor for the following hour.
BASELINE_PER_MINUTE = 5
BURST = 10 * CONFIG.account_burst_factor


@pytest.fixture
def accounts(dovecot: Dovecot) -> Iterator[None]:
    original = dovecot.passwd_path.read_text()
    extra = "".join(f"{account}:{{PLAIN}}{PASSWORD}\n" for account in PLAN)
    dovecot.passwd_path.write_text(original + extra)
    yield
    dovecot.passwd_path.write_text(original)


def submit(postfix: Postfix, account: str, source: str, recipients: int) -> None:
    with smtplib.SMTP(
        "127.0.0.1", postfix.submission_port, source_address=(source, 0), timeout=30
    ) as client:
        client.starttls(context=_any_cert())
        client.ehlo()
        client.login(account, PASSWORD)
        client.sendmail(account, list(RECIPIENTS[:recipients]), "Subject: t\r\n\r\nhi\r\n")


def test_each_account_counts_exactly_its_messages_and_addresses(
    postfix: Postfix, dovecot: Dovecot, accounts: None, tmp_path: Path
) -> None:
    quiet(postfix.log_path)
    settings = LogsConfig.model_validate(
        {"enabled": True, "poll_interval": "50ms", "sources": [{"path": str(postfix.log_path)}]}
    )
    collector = LogsCollector(settings)
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for account, (sources, recipients) in PLAN.items():
        labels = (("account", account), ("mta", "postfix"))
        expected[("mail_account_messages_total", labels)] = len(sources)
        expected[("mail_account_recipients_total", labels)] = len(sources) * recipients
        expected[("mail_account_client_addresses", (("account", account),))] = len(set(sources))
    try:
        wait_until_following(collector)
        for account, (sources, recipients) in PLAN.items():
            for source in sources:
                submit(postfix, account, source, recipients)
        deadline = time.monotonic() + 20
        while not all(samples(collector).get(key, 0) >= n for key, n in expected.items()):
            assert time.monotonic() < deadline, samples(collector)
            time.sleep(0.1)
        quiet(postfix.log_path)
        found = samples(collector)
        assert {key: found.get(key) for key in expected} == expected
        check_with_promtool(collector)
        check_burst_alert(found, tmp_path)
    finally:
        collector.close()


def check_burst_alert(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], tmp_path: Path
) -> None:
    counters = {
        labels: count
        for (name, labels), count in found.items()
        if name == "mail_account_messages_total"
    }
    bursting = max(counters, key=lambda labels: counters[labels])
    assert min(counters.values()) * BASELINE_PER_MINUTE / 60 > CONFIG.account_burst_min_per_second
    series = []
    for labels, count in counters.items():
        selector = ",".join(f'{key}="{value}"' for key, value in (*labels, *SCRAPE_LABELS.items()))
        base = count * BASELINE_PER_MINUTE
        if labels == bursting:
            values = f"0+{base:g}x1439 {base * 1440:g}+{base * BURST:g}x60"
        else:
            values = f"0+{base:g}x1500"
        series.append({"series": f"mail_account_messages_total{{{selector}}}", "values": values})
    burst_labels = {**dict(bursting), **SCRAPE_LABELS}
    burst_per_second = counters[bursting] * BASELINE_PER_MINUTE * BURST / 60
    (rule,) = shipped_rules(BURST_ALERT)
    expected = [
        {
            "exp_labels": {**burst_labels, "severity": "warning"},
            "exp_annotations": shipped_annotations(rule, burst_labels, burst_per_second),
        }
    ]
    check_shipped_alert(BURST_ALERT, series, "1440m", "1470m", expected, tmp_path)
