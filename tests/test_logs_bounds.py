"""Hostile log text: every label from a line stays bounded and printable, no line text is held.

Each crafted line puts a value of the writer's choosing where a label value, a queue ID,
a syslog tag or a reply text is taken from. Thousands of distinct values must not add
more than a bounded number of series, must never put control characters (NUL, escape,
carriage return) into the exposition, and 8 KB values must not stay in memory.
"""

from __future__ import annotations

import re
import textwrap
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.dispatch import LineDispatcher
from mail_exporter.collectors.logs.exim import SESSIONS_REMEMBERED, EximParser
from mail_exporter.collectors.logs.labels import MAX_DOMAIN_CHARS
from mail_exporter.collectors.logs.postfix import MAX_QUEUE_ID_CHARS, PostfixParser
from mail_exporter.collectors.logs.render import Snapshot, families
from tests.served import get, served_exporter

H = "Jan 12 10:00:00 mail"
E = "2024-01-12 10:00:00"
DELIVERY = "relay=r[192.0.2.2]:25, delay=1, delays=0.1/0.1/0.1/0.1, dsn=2.0.0, status=sent (ok)"
# (format, lines with {v} where the crafted value goes and {n} for a distinct number)
TEMPLATES: dict[str, tuple[str, str]] = {
    "postfix-service": ("syslog", f"{H} postfix/{{v}}/smtpd[1]: connect from x[192.0.2.1]"),
    "postfix-instance": ("syslog", f"{H} postfix-{{v}}/smtpd[1]: connect from x[192.0.2.1]"),
    "postfix-daemon": ("syslog", f"{H} postfix/{{v}}[1]: warning: something odd"),
    "program": ("syslog", f"{H} {{v}}[1]: hello"),
    "journal-identifier": ("message", "{v}\thello"),
    "postfix-transport": ("syslog", f"{H} postfix/{{v}}/smtp[1]: 1A: to=<a@b.example>, {DELIVERY}"),
    "postfix-status": ("syslog", f"{H} postfix/smtp[1]: 1A: to=<a@b.example>, relay=r, "
                                 "delay=1, dsn=2.0.0, status={v} (ok)"),
    "postfix-dsn": ("syslog", f"{H} postfix/smtp[1]: 1A: to=<a@b.example>, relay=r, delay=1, "
                              "dsn={v}, status=sent (ok)"),
    "postfix-tls-version": ("syslog", f"{H} postfix/smtpd[1]: Anonymous TLS connection established "
                                      "from x[192.0.2.1]: TLSv{v} with cipher C (256/256 bits)"),
    "postfix-tls-name": ("syslog", f"{H} postfix/smtp[1]: Verified TLS connection established "
                                   "to x[192.0.2.1]:25: {v} with cipher C (256/256 bits)"),
    "postfix-tls-trust": ("syslog", f"{H} postfix/smtpd[1]: {{v}} TLS connection established "
                                    "from x[192.0.2.1]: TLSv1.3 with cipher C (256/256 bits)"),
    "postfix-mechanism": ("syslog", f"{H} postfix/submission/smtpd[1]: 1A: client=x[192.0.2.1], "
                                    "sasl_method={v}, sasl_username=u"),
    "postfix-lost-after": ("syslog", f"{H} postfix/smtpd[1]: lost connection after {{v}} from x"),
    "postfix-reject": ("syslog", f"{H} postfix/smtpd[1]: NOQUEUE: reject: {{v}} from x[192.0.2.1]: "
                                 "554 5.7.1 <a@b>: {v}; from=<a@b> to=<c@d> proto=ESMTP"),
    "postfix-severity": ("syslog", f"{H} postfix/qmgr[1]: {{v}}: something"),
    "postfix-problem-class": ("syslog", f"{H} postfix/smtpd[1]: warning: {{v}}: {{v}}"),
    "postfix-table-changed": ("syslog", f"{H} postfix/smtpd[1]: table {{v}} has changed -- "
                                        "restarting"),
    "postfix-expired": ("syslog", f"{H} postfix/qmgr[1]: {{v}}: from=<a@{{v}}>, status={{v}}, "
                                  "returned to sender"),
    "postfix-postscreen": ("syslog", f"{H} postfix/postscreen[1]: {{v}} [192.0.2.1]:5"),
    "postfix-bounce": ("syslog", f"{H} postfix/bounce[1]: 1A: {{v}} notification: 2B"),
    "postfix-queue-id": ("syslog", f"{H} postfix/qmgr[1]: {{v}}: from=<a@b.example>, size=1, "
                                   "nrcpt=1 (queue active)"),
    "postfix-sender-domain": ("syslog", f"{H} postfix/qmgr[1]: Q{{n}}: from=<a@{{v}}>, size=1, "
                                        f"nrcpt=1 (queue active)\n{H} postfix/qmgr[1]: Q{{n}}: "
                                        "removed"),
    "postfix-recipient-domain": ("syslog", f"{H} postfix/smtp[1]: 1A: to=<a@{{v}}>, {DELIVERY}"),
    "postfix-refusal": ("syslog", f"{H} postfix/smtp[1]: 1A: to=<a@{{v}}>, relay=r, delay=1, "
                                  "dsn=5.7.1, status=bounced (host r said: 5{v} {v}.{v} {v} "
                                  "(in reply to RCPT TO command))"),
    "postfix-refusal-code": ("syslog", f"{H} postfix/smtp[1]: 1A: to=<a@b>, relay=r, delay=1, "
                                       "dsn=4.7.1, status=deferred (host r refused to talk to "
                                       "me: 4{n} 4.{n}.{n} x)"),
    "exim-protocol": ("exim", f"{E} 1rOHxx-000abc-Ab <= a@b.example H=h [192.0.2.1] P={{v}} S=1"),
    "exim-transport": ("exim", f"{E} 1rOHxx-000abc-Ab => c@d.example R=r T={{v}} H=h [192.0.2.1] "
                               "X=TLS1.3:C:256 CV=yes"),
    "exim-tls": ("exim", f"{E} 1rOHxx-000abc-Ab <= a@b.example H=h [192.0.2.1] P=esmtps "
                         "X={v}:C:256 CV={v} DN={v} S=1"),
    "exim-sender-domain": ("exim", f"{E} 1rOHxx-000abc-Ab <= a@{{v}} H=h [192.0.2.1] P=esmtp S=1"),
    "exim-recipient-domain": ("exim", f"{E} 1rOHxx-000abc-Ab => c@{{v}} R=r T=t H=h [192.0.2.1]"),
    "exim-refusal": ("exim", f"{E} 1rOHxx-000abc-Ab ** c@{{v}} R=r T=t H=h [192.0.2.1]: SMTP "
                             "error from remote mail server after RCPT TO:<c@d>: {n} 5.{n}.1 {v}"),
    "exim-shape": ("exim", f"{E} 1rOHxx-000abc-Ab <= a@b.example H=h [192.0.2.1] P=esmtp "
                           "S={n} for {v} {v}"),
    "exim-reject": ("exim", f"{E} H=h [192.0.2.1] F=<a@b> rejected {{v}} <c@d>: {{v}}"),
    "dovecot-process": ("syslog", f"{H} dovecot: {{v}}-login: Login: user=<u>, method=PLAIN"),
    "dovecot-mechanism": ("syslog", f"{H} dovecot: imap-login: Login: user=<u>, method={{v}}, x"),
    "dovecot-level": ("syslog", f"{H} dovecot: imap: {{v}}: something"),
    "dovecot-disconnect": ("syslog", f"{H} dovecot: imap({{v}}): Disconnected: {{v}} in=0 out=0"),
    "dovecot-passdb": ("syslog", f"{H} dovecot: auth-worker(1): conn unix:auth-worker (pid=1,uid=1): "
                                 "auth-worker<1>: {v}({v},{v}): {v} Password mismatch {v}"),
    "dovecot-passdb-24": ("dovecot", "Jun 23 00:10:49 auth-worker({v})<1><{v}>: request [{v}]: "
                                     "Info: {v}: unknown user {v}"),
    "dovecot-login-aborted": ("syslog", f"{H} dovecot: imap-login: Login aborted: {{v}} (auth failed, "
                                        "{v} attempts in 1 secs) ({v}): user=<{v}>"),
    "pam-unix": ("syslog", f"{H} auth: {{v}}(dovecot:auth): authentication failure; ruser={{v}}"),
    "dovecot-file-process": ("dovecot", "Nov 28 01:51:16 {v}: Info: Login: user=<u>, method=PLAIN"),
    "rspamd-action": ("syslog", f"{H} rspamd[1]: id: <m>, (default: T ({{v}}): [7/15] [X]), len: 1"),
    "amavis-category": ("syslog", f"{H} amavis[1]: (1-1) Blocked {{v}} {{{{x}}}}, <a@b> -> <c@d>"),
}  # fmt: skip
HOSTILE = ("", "\x00", "\x1b[31m", "\x07\x08", "\r", "\x7f", "\u202e", "\u200b", "\x85", "x" * 300)
"""Put into every fifth value: control and invisible characters, and length."""
DISTINCT = 3000
MAX_SERIES = 1000
"""Far below DISTINCT: a label taken from the text without a bound makes one series per value."""


def crafted(n: int) -> str:
    """The ``n``-th distinct value; one in five carries something a label must not."""
    hostile = HOSTILE[n // 5 % len(HOSTILE)] if n % 5 == 0 else ""
    return f"v{n}{hostile}z"


def feeder(counters: LogCounters, log_format: str) -> Callable[[str], None]:
    dispatcher = LineDispatcher(counters)
    if log_format == "message":

        def feed_message(line: str) -> None:
            program, text = line.split("\t", 1)
            dispatcher.messages([(program, text)])

        return feed_message
    return dispatcher.feeder(log_format)


def lines_of(name: str, value: str, n: int) -> list[str]:
    return TEMPLATES[name][1].format(v=value, n=n).split("\n")


def feed(name: str, values: Callable[[int], str], count: int) -> LogCounters:
    counters = LogCounters(top_domains=10)
    take = feeder(counters, TEMPLATES[name][0])
    for n in range(count):
        for line in lines_of(name, values(n), n):
            take(line)
    return counters


def label_sets(counters: LogCounters) -> dict[str, set[tuple[str, ...]]]:
    """Each family's distinct label sets, as the collector renders them."""
    found: dict[str, set[tuple[str, ...]]] = {}
    for family in families(Snapshot.take(counters), []):
        found[family.name] = {
            tuple(v for k, v in sorted(sample.labels.items()) if k != "le")
            for sample in family.samples
        }
    return found


def unprintable(value: str) -> bool:
    return not value.isprintable() or len(value) > MAX_DOMAIN_CHARS


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_label_from_log_text_stays_bounded(name: str) -> None:
    counters = feed(name, crafted, DISTINCT)
    assert sum(counters.lines.values()) == DISTINCT * len(lines_of(name, "", 0))
    for family, labels in label_sets(counters).items():
        assert len(labels) <= MAX_SERIES, (name, family, len(labels))
        bad = [value for values in labels for value in values if unprintable(value)]
        assert not bad, (name, family, bad[:3])


CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def test_hostile_log_lines_reach_the_exposition_clean_and_bounded(tmp_path: Path) -> None:
    """The real exporter follows a file of crafted lines: every label value in /metrics is
    printable, and no log-derived family grows with the number of distinct values."""
    logs = {fmt: tmp_path / f"{fmt}.log" for fmt in ("syslog", "exim", "dovecot")}
    written = 0
    for log_format, path in logs.items():
        with path.open("w", encoding="utf-8") as log:
            for log_format_of, template in TEMPLATES.values():
                if log_format_of != log_format:
                    continue
                for n in range(DISTINCT):
                    log.write(template.format(v=crafted(n), n=n) + "\n")
                    written += template.count("\n") + 1
    sources = "".join(f"      - {{path: {path}, format: {fmt}}}\n" for fmt, path in logs.items())
    config = tmp_path / "config.yml"
    config.write_text(
        textwrap.dedent("""\
            collectors:
              logs:
                enabled: true
                start_at: beginning
                poll_interval: 50ms
                sources:
            """)
        + sources
    )
    with served_exporter(tmp_path, config) as served:
        deadline = time.monotonic() + 60
        while True:
            body = get(served.port, "/metrics").body
            counted = sum(
                sample.value
                for family in text_string_to_metric_families(body)
                if family.name == "mail_log_lines"
                for sample in family.samples
                if sample.name == "mail_log_lines_total"
            )
            if counted >= written or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert counted == written
    assert "\x00" not in body
    assert not CONTROL.search(body), CONTROL.findall(body)[:5]
    for family in text_string_to_metric_families(body):
        series = {tuple(sorted(s.labels.items())) for s in family.samples if "le" not in s.labels}
        assert len(series) <= MAX_SERIES, (family.name, len(series))


@pytest.mark.parametrize("name", TEMPLATES)
def test_no_line_text_is_held(name: str) -> None:
    """2,000 lines, each with distinct 8 KB values (16 MB of text), leave nothing behind."""
    counters = LogCounters(top_domains=10)
    take = feeder(counters, TEMPLATES[name][0])
    for line in lines_of(name, "warm", 0):  # first-use allocations are not what is measured
        take(line)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1, 2001):
            for line in lines_of(name, f"{n:05d}" + "Q" * 8192, n):
                take(line)
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sum(counters.lines.values()) == 2001 * len(lines_of(name, "", 0))
    assert retained < 256 * 1024, (name, retained)


def queue_line(queue_id: str) -> str:
    return f"{queue_id}: from=<a@b.example>, size=1, nrcpt=1 (queue active)"


def test_queue_ids_are_forgotten_least_recently_seen_first() -> None:
    counters = LogCounters(top_domains=10)
    parser = PostfixParser(counters, max_queued_ids=3)

    def seen(*queue_ids: str) -> int:
        before = counters.received[("postfix",)]
        for queue_id in queue_ids:
            parser.qmgr("qmgr", queue_line(queue_id))
        return counters.received[("postfix",)] - before

    assert seen("A1", "B2", "C3") == 3
    assert seen("A1") == 0  # retried: A1 is now the most recently seen
    assert seen("D4") == 1  # pushes out B2, the least recently seen
    assert seen("A1", "C3", "D4") == 0
    assert seen("B2") == 1  # B2 was forgotten, so counts again; pushes out A1
    parser.qmgr("qmgr", "C3: removed")
    assert seen("E5") == 1  # the free place C3 left: nothing else goes
    assert seen("D4", "B2", "E5") == 0
    assert seen("A1") == 1


def test_ids_no_postfix_writes_are_counted_but_not_remembered() -> None:
    counters = LogCounters(top_domains=10)
    parser = PostfixParser(counters)
    real = ("4F3A21C0", "20AA12141C4", "3Tbn8y0KXVz9sR", "4XyZbcdfghjBzPQRSTVWXYZ1")
    for queue_id in (*real, *real):
        parser.qmgr("qmgr", queue_line(queue_id))
    assert counters.received[("postfix",)] == len(real)
    for queue_id in ("A" * (MAX_QUEUE_ID_CHARS + 1), "4F3A-21C0", "4F3A\x0021C0", "4F3Aé"):
        parser.qmgr("qmgr", queue_line(queue_id))
        parser.qmgr("qmgr", queue_line(queue_id))
    assert counters.received[("postfix",)] == len(real) + 8
    assert list(parser.queued) == list(real)


def test_queue_id_memory_at_the_cap_is_bounded() -> None:
    """A full memory of the longest IDs Postfix writes stays within the documented figure."""
    counters = LogCounters(top_domains=10)
    parser = PostfixParser(counters, max_queued_ids=20_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(40_000):
            parser.qmgr("qmgr", queue_line(f"{n:0{MAX_QUEUE_ID_CHARS}X}"))
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert isinstance(parser.queued, OrderedDict)
    assert len(parser.queued) == 20_000
    assert retained < 20_000 * 200  # ~165 bytes an ID: 33 MB at the default 200,000


def test_exim_tls_session_memory_is_bounded() -> None:
    """Refused deliveries over TLS of more messages than are remembered: the oldest are
    forgotten, each still counts its session, and no reply text is kept."""
    counters = LogCounters(top_domains=10)
    parser = EximParser(counters)
    for n in range(2 * SESSIONS_REMEMBERED):
        parser.file_line(
            f"{E} 1xaEw3-{n:06d}-1v ** a@b.test R=r T=remote_smtp H=h{n} [127.0.0.1] "
            f"X=TLS1.3:CIPHER:256 CV=yes: SMTP error from remote mail server after RCPT "
            f"TO:<a@b.test>: 550 5.1.1 {'x' * 8000}"
        )
    assert len(parser.sessions) == SESSIONS_REMEMBERED
    assert max(map(len, parser.sessions.values())) < 100
    assert sum(counters.tls_connections.values()) == 2 * SESSIONS_REMEMBERED


def test_many_receiving_domains_and_replies_keep_series_and_memory_bounded() -> None:
    """100,000 refusals, each from another domain with another reply text: the domain
    series stay within ``top_domains`` (and ``other``) per status and reason, the code
    series within the known codes, and what the parser holds does not grow with them."""
    counters = LogCounters(top_domains=10)
    take = feeder(counters, "syslog")
    line = (f"{H} postfix/smtp[1]: 1A: to=<a@d{{n}}.example>, relay=r, delay=1, dsn=5.7.1, "
            "status=bounced (host r said: 55{d} 5.{d}.{n} blocked {n} on our block list "
            "(in reply to RCPT TO command))")  # fmt: skip

    def run(start: int, count: int) -> None:
        for n in range(start, start + count):
            take(line.format(n=n, d=n % 10))

    run(0, 10_000)  # warm: caches and candidate lists full
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        run(10_000, 90_000)
        grown = sum(
            stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename")
        )
    finally:
        tracemalloc.stop()
    sets = label_sets(counters)
    assert len(sets["mail_delivery_refusals"]) <= 11
    assert len(sets["mail_delivery_refusal_codes"]) <= 3 * (2 * 79 + 1)
    assert counters.deliveries[("postfix", "smtp", "bounced")] == 100_000
    assert grown < 2_000_000, grown
