"""Who sends: per-account messages, recipients and client addresses from real line shapes.

The Postfix lines are the shapes tests/realservers' Postfix writes for a SASL submission
(smtpd ``client=... sasl_username=``, qmgr ``from=... nrcpt=``); the Exim line is from
the Exim 4.96 mainlog of tests/test_logs_parsers.py's EXIM_TLS_CASES (a Dovecot login
through ``A=dovecot_login``); the Dovecot line is Dovecot 2.3's ``submission-login``.
"""

from __future__ import annotations

import resource

from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.dispatch import LineDispatcher
from mail_exporter.collectors.logs.render import Snapshot, families
from mail_exporter.collectors.logs.senders import MAX_ADDRESSES, ClientAddresses

H = "Jan 12 10:00:00 mail"
P, E = "postfix", "exim"


def feed(counters: LogCounters, lines: list[str], log_format: str = "syslog") -> None:
    take = LineDispatcher(counters).feeder(log_format)
    for line in lines:
        take(line)


def postfix_message(queue_id: str, account: str, address: str, recipients: int) -> list[str]:
    return [
        f"{H} postfix/submission/smtpd[1]: {queue_id}: client=localhost[{address}], "
        f"sasl_method=PLAIN, sasl_username={account}",
        f"{H} postfix/qmgr[2]: {queue_id}: from=<{account}>, size=400, nrcpt={recipients} "
        "(queue active)",
        f"{H} postfix/qmgr[2]: {queue_id}: from=<{account}>, size=400, nrcpt={recipients} "
        "(queue active)",  # a retry: the message counts once
    ]


def test_postfix_counts_messages_recipients_and_addresses_per_account() -> None:
    counters = LogCounters(top_domains=10)
    lines = [
        *postfix_message("1A2B3C", "alice@test.local", "127.0.0.2", 3),
        *postfix_message("1A2B3D", "alice@test.local", "127.0.0.3", 1),
        *postfix_message("1A2B3E", "bob@test.local", "127.0.0.2", 2),
        # no account: not counted per account
        f"{H} postfix/smtpd[1]: 1A2B3F: client=mx.example[192.0.2.1]",
        f"{H} postfix/qmgr[2]: 1A2B3F: from=<x@example.org>, size=1, nrcpt=1 (queue active)",
    ]
    feed(counters, lines)
    assert counters.accounts.snapshot() == {
        (P, "alice@test.local", "messages"): 2,
        (P, "alice@test.local", "recipients"): 4,
        (P, "bob@test.local", "messages"): 1,
        (P, "bob@test.local", "recipients"): 2,
    }
    assert counters.account_addresses.snapshot() == {
        ("alice@test.local",): 2,
        ("bob@test.local",): 1,
    }


def test_exim_and_dovecot_submission_name_the_account() -> None:
    counters = LogCounters(top_domains=10)
    feed(
        counters,
        [
            "2024-01-12 10:00:03 1hpltZ-00ECG0-Rv <= user@example.com H=(DESKTOP2L8P8MT) "
            "[203.0.113.9]:63715 P=esmtpsa X=TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384:256 CV=no "
            'A=dovecot_login:user@example.com S=13483 id=abc@example.com T="re: A=x:y" '
            "for someone@example.net other@example.net",
            # an authenticator without an id (a client certificate): no account
            "2024-01-12 10:00:04 1hpltZ-00ECG1-Rv <= a@example.com H=[203.0.113.8] "
            "P=esmtpsa A=smarthost_login S=10 id=x@example.com",
        ],
        "exim",
    )
    feed(
        counters,
        [
            f"{H} dovecot: submission-login: Login: user=<user@example.com>, method=PLAIN, "
            "rip=198.51.100.4, lip=192.0.2.25, mpid=41, TLS, session=<abc>",
            f"{H} dovecot: imap-login: Login: user=<user@example.com>, method=PLAIN, "
            "rip=198.51.100.5, lip=192.0.2.25, mpid=42, TLS, session=<abd>",
        ],
    )
    assert counters.accounts.snapshot() == {
        (E, "user@example.com", "messages"): 1,
        (E, "user@example.com", "recipients"): 2,
    }
    assert counters.account_addresses.snapshot() == {("user@example.com",): 2}


def test_addresses_leave_the_window_and_saturate_at_the_cap() -> None:
    now = [0.0]
    addresses = ClientAddresses(keep=2, window=600.0, clock=lambda: now[0])
    for n in range(MAX_ADDRESSES + 10):
        addresses.add("alice", f"192.0.2.{n}")
    addresses.add("bob", "192.0.2.1")
    addresses.add("carol", "192.0.2.1")
    addresses.add("carol", "192.0.2.2")
    assert addresses.snapshot() == {("alice",): MAX_ADDRESSES, ("carol",): 2}
    now[0] = 500.0
    addresses.add("bob", "192.0.2.9")
    now[0] = 700.0  # alice's and carol's addresses are 700 s old, bob's last one 200 s
    assert addresses.snapshot() == {("bob",): 1}


def test_account_names_are_bounded_and_printable() -> None:
    counters = LogCounters(top_domains=10, top_accounts=3)
    bad = ["x" * 300 + "@example.org", "evil\x1b[2J@example.org", "zero\u200bwidth@example.org"]
    lines = [
        line
        for n, account in enumerate(bad)
        for line in postfix_message(f"AB{n}", account, "127.0.0.2", 1)
    ]
    feed(counters, lines)
    assert counters.accounts.snapshot() == {
        (P, "other", "messages"): 3,
        (P, "other", "recipients"): 3,
    }
    assert counters.account_addresses.snapshot() == {}


def test_a_hundred_thousand_accounts_stay_within_the_cap() -> None:
    """100,000 distinct accounts, each from its own address: at most ``top_accounts``
    series (and ``other``) per family, and the held state stays small."""
    counters = LogCounters(top_domains=10, top_accounts=10)
    take = LineDispatcher(counters).feeder("syslog")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for n in range(100_000):
        queue_id = f"Q{n:08X}"
        for line in postfix_message(
            queue_id, f"user{n}@example.org", f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}", 2
        )[:2]:
            take(line)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    rendered = {f.name: f.samples for f in families(Snapshot.take(counters), [])}
    for name in ("mail_account_messages", "mail_account_recipients"):
        assert len(rendered[name]) <= 11, name
        # a demoted account's series ends (see domains.py), the rest is in other
        assert {s.labels["account"] for s in rendered[name]} >= {"other"}
    assert len(rendered["mail_account_client_addresses"]) <= 10
    assert len(counters.account_addresses._seen) <= 200
    assert len(counters.accounts._volume) <= 200 + 256
    assert grown_kib < 64 * 1024, grown_kib
