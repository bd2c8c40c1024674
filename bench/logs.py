"""Log collector speed: lines per second through parse and count, and against postfix_exporter.

Two measurements on the same generated, realistic Postfix log (``--lines``, 1M by
default: smtpd sessions with TLS, submission logins, qmgr, smtp/lmtp/local deliveries
with delays, deferrals, bounces, rejects at several stages, SASL failures).
``--refusals SHARE`` turns that share of deliveries into deferrals and bounces that quote
a big receiver's refusal (:data:`REFUSALS`, from ``tests/fixtures/logs/
postfix_refusals.log``); at 0, the default, the log is the same as before those existed,
so figures stay comparable with earlier runs.

1. **Parse and count** on one core, in this process: every line through
   :class:`LineDispatcher` into the counters, handed on as a file follower hands them (a
   batch per 256 KiB read, through its ``Feed``), best of ``--runs``. Then as many lines of
   qmgr's ``from=`` for new queue IDs that are never removed (a deferred queue past the
   cap, or a flood of forged qmgr lines): ``MAX_QUEUED_IDS`` of them with nothing held
   before, then ``--lines`` more with those held, so that each line remembers one ID
   and pushes the oldest out.
2. **Side by side, end to end**: the real ``mail-exporter`` (only the logs collector)
   and Debian's ``prometheus-postfix-exporter``, each following its own copy of an
   empty log file on 127.0.0.1. The whole log is appended at once, then each
   exporter's /metrics is polled until its counters show the last line: for us
   ``mail_log_lines_total`` summing to the line count, for postfix_exporter the one
   cleanup ``reject`` line written last (its ``postfix_cleanup_messages_rejected_total``
   reaching 1, the log being read in order). Wall time from the append to that, and
   each process's CPU time over it.

   ``--before TREE`` runs a third exporter from the source tree ``TREE`` (an older
   commit's, e.g. a second worktree) the same way, in the same run. ``--repeat N`` runs
   the whole side by side N times, each round with exporters started afresh; the table
   gives each exporter's median (and range), and the verdict is the median of the
   rounds' ratios, since one round on a shared machine moves by a quarter either way.
   ``--python PY`` runs the exporters with another interpreter: ours as PY's environment
   has the package installed, ``--before``'s tree on PY too. The shipped build, as the
   container image has it (an interpreter built with PGO and LTO, the log parse compiled
   with mypyc), against the same code in pure Python on the same interpreter::

       make shipped
       .venv/bin/python bench/logs.py --python .cache/shipped/bin/python --before "$PWD"

   ``--parse-only`` runs (1) alone, in the interpreter running the script and with the
   package its environment has (``.cache/shipped/bin/python bench/logs.py --parse-only``
   measures the compiled parse).

Targets: at least 200,000 lines/s in (1), and at least 3x postfix_exporter's lines per
second in (2); the ratio is printed and a miss of either exits 1.

    .venv/bin/python bench/logs.py                 # 1M lines
    .venv/bin/python bench/logs.py --quick         # 200,000 lines, one run
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import median

import psutil

# After the installed package, so that an environment with the compiled build installed
# measures that (the checkout is found here when nothing is installed).
sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Children,
    exporter_command,
    free_port,
    http_ok,
    machine_line,
    print_table,
    wait_until,
)
from mail_exporter.collectors.logs import dispatch
from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.dispatch import LineDispatcher
from mail_exporter.collectors.logs.follower import CHUNK_BYTES, Feed
from mail_exporter.collectors.logs.lines import LineSplitter
from mail_exporter.collectors.logs.postfix import MAX_QUEUED_IDS

PEER = "prometheus-postfix-exporter"
TARGET_LINES_PER_SECOND = 200_000
TARGET_RATIO = 3.0
"""Our lines per second end to end over postfix_exporter's, at least."""
SENTINEL = (
    "Jan 12 23:59:59 mail postfix/cleanup[999]: 4FFFFFFFFF: reject: header Subject: win "
    "from unknown[192.0.2.9]; from=<s@spam.example> to=<u@example.com> proto=ESMTP "
    "helo=<spam>: 5.7.1 message content rejected"
)
DOMAINS = ["example.com", "example.net", "gmail.com", "outlook.com", "yahoo.com",
           "web.de", "gmx.de", "example.org", "mail.ru", "icloud.com"]  # fmt: skip
REJECTS = (
    "RCPT from unknown[{ip}]: 554 5.7.1 <u@outside.example>: Relay access denied",
    "RCPT from unknown[{ip}]: 554 5.7.1 Service unavailable; Client host [{ip}] blocked "
    "using zen.spamhaus.org",
    "RCPT from mx.example[{ip}]: 550 5.1.1 <nobody@example.com>: Recipient address rejected: "
    "User unknown in virtual mailbox table",
    "EHLO from unknown[{ip}]: 504 5.5.2 <localhost>: Helo command rejected: need fully-"
    "qualified hostname",
    "MAIL from unknown[{ip}]: 553 5.7.1 <a@b>: Sender address rejected: not logged in",
)
# Replies of the scripted receiver in tests/fixtures/logs/postfix_refusals.log (the big
# receivers' documented codes and key phrases), with the domain they come from and the
# status they leave: rate limits and reputation blocks, unknown users, full mailboxes.
REFUSALS = (
    ("gmail.com", "deferred", "4.7.28", "421-4.7.28 [{ip}] unusual rate of unsolicited mail "
     "from 421 4.7.28 your IP address: temporarily rate limited - gsmtp"),
    ("gmail.com", "bounced", "5.1.1", "550-5.1.1 The email account that you tried to reach "
     "does 550 5.1.1 not exist - gsmtp"),
    ("gmail.com", "deferred", "4.2.2", "452 4.2.2 The email account is over quota - gsmtp"),
    ("gmail.com", "bounced", "5.7.26", "550 5.7.26 Blocked: the sender is unauthenticated "
     "- gsmtp"),
    ("outlook.com", "deferred", "4.7.650", "451 4.7.650 The mail server [{ip}] has been "
     "temporarily rate limited due to IP reputation (S775)"),
    ("outlook.com", "bounced", "5.7.1", "550 5.7.1 Messages from [{ip}] weren't sent: part "
     "of their network is on our block list (S3150)"),
    ("yahoo.com", "deferred", "4.7.0", "421 4.7.0 [TSS04] Messages from {ip} temporarily "
     "deferred due to unexpected volume or user complaints"),
    ("yahoo.com", "bounced", "5.7.1", "553 5.7.1 [BL21] Connections not accepted from {ip}, "
     "because the ip is in Spamhaus's list"),
)  # fmt: skip


class LogWriter:
    """Builds syslog lines with a running clock, queue IDs and process IDs."""

    def __init__(self, seed: int, refusals: float = 0.0) -> None:
        self.random = random.Random(seed)
        self.refusals = refusals  # the share of deliveries refused by a big receiver
        self.second = 0
        self.queue_id = 0x1A2B3C0000

    def line(self, program: str, text: str) -> str:
        self.second += self.random.random() < 0.01
        stamp = f"Jan 12 {self.second // 3600 % 24:02d}:{self.second // 60 % 60:02d}:" \
                f"{self.second % 60:02d}"  # fmt: skip
        return f"{stamp} mail postfix/{program}[{self.random.randint(1000, 30000)}]: {text}"

    def ip(self) -> str:
        r = self.random
        return f"{r.randint(1, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def address(self) -> str:
        return f"user{self.random.randint(1, 500)}@{self.random.choice(DOMAINS)}"

    def new_queue_id(self) -> str:
        self.queue_id += self.random.randint(1, 50)
        return f"{self.queue_id:X}"


def inbound_message(log: LogWriter) -> Iterator[str]:
    """A TLS SMTP session that delivers one message to a local mailbox or relays it."""
    r, ip, queue_id = log.random, log.ip(), log.new_queue_id()
    yield log.line("smtpd", f"connect from mx.example[{ip}]")
    yield log.line("smtpd", f"Anonymous TLS connection established from mx.example[{ip}]: "
                   "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)")  # fmt: skip
    yield log.line("smtpd", f"{queue_id}: client=mx.example[{ip}]")
    yield log.line("cleanup", f"{queue_id}: message-id=<{queue_id}@mx.example>")
    yield log.line("qmgr", f"{queue_id}: from=<{log.address()}>, size={r.randint(900, 90000)}, "
                   "nrcpt=1 (queue active)")  # fmt: skip
    yield log.line("smtpd", f"disconnect from mx.example[{ip}] ehlo=2 starttls=1 mail=1 rcpt=1 "
                   "data=1 quit=1 commands=7")  # fmt: skip
    yield from delivery(log, queue_id)
    yield log.line("qmgr", f"{queue_id}: removed")


def refused(log: LogWriter, queue_id: str, delays: str) -> str:
    """A delivery a big receiver refused, quoting its reply."""
    domain, status, dsn, reply = log.random.choice(REFUSALS)
    ip = log.ip()
    user = log.address().split("@")[0]
    return log.line(
        "smtp",
        f"{queue_id}: to=<{user}@{domain}>, relay=mx.{domain}[{ip}]:25, delay=1, "
        f"delays={delays}, dsn={dsn}, status={status} (host mx.{domain}[{ip}] said: "
        f"{reply.format(ip=ip)} (in reply to RCPT TO command))",
    )


def delivery(log: LogWriter, queue_id: str) -> Iterator[str]:
    r = log.random
    delays = f"{r.random():.2f}/{r.random() / 10:.2f}/{r.random():.2f}/{r.random() * 2:.2f}"
    # No draw at share 0: the log stays the same as before refusals were generated.
    if log.refusals and r.random() < log.refusals:
        yield refused(log, queue_id, delays)
        return
    roll = r.random()
    if roll < 0.55:
        yield log.line("lmtp", f"{queue_id}: to=<{log.address()}>, relay=mail[private/dovecot-"
                       f"lmtp], delay=1.2, delays={delays}, dsn=2.0.0, status=sent (250 2.0.0 "
                       "<u> Saved)")  # fmt: skip
    elif roll < 0.8:
        yield log.line("smtp", f"{queue_id}: to=<{log.address()}>, relay=mx.example[{log.ip()}]"
                       f":25, delay=2.1, delays={delays}, dsn=2.0.0, status=sent (250 2.0.0 Ok: "
                       "queued as 4XyZ)")  # fmt: skip
    elif roll < 0.9:
        yield log.line("smtp", f"{queue_id}: to=<{log.address()}>, relay=none, delay=30, "
                       f"delays={delays}, dsn=4.4.1, status=deferred (connect to mx.example["
                       f"{log.ip()}]:25: Connection timed out)")  # fmt: skip
    elif roll < 0.95:
        yield log.line("local", f"{queue_id}: to=<root@mail.example.com>, orig_to=<root>, "
                       f"relay=local, delay=0.1, delays={delays}, dsn=2.0.0, status=sent "
                       "(delivered to mailbox)")  # fmt: skip
    else:
        yield log.line(
            "smtp",
            f"{queue_id}: to=<{log.address()}>, relay=mx.example[{log.ip()}]"
            f":25, delay=1, delays={delays}, dsn=5.1.1, status=bounced (host mx."
            "example said: 550 5.1.1 User unknown (in reply to RCPT TO command))",
        )
        notice = log.new_queue_id()
        yield log.line("cleanup", f"{notice}: message-id=<{notice}@mail.example.com>")
        yield log.line("bounce", f"{queue_id}: sender non-delivery notification: {notice}")


def rejected_session(log: LogWriter) -> Iterator[str]:
    ip = log.ip()
    reject = log.random.choice(REJECTS).format(ip=ip)
    yield log.line("smtpd", f"connect from unknown[{ip}]")
    yield log.line("smtpd", f"NOQUEUE: reject: {reject}; from=<{log.address()}> "
                   f"to=<{log.address()}> proto=ESMTP helo=<spammer>")  # fmt: skip
    yield log.line("smtpd", f"disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=0/1 quit=1 "
                   "commands=3/4")  # fmt: skip


def sasl_attack(log: LogWriter) -> Iterator[str]:
    ip = log.ip()
    service = log.random.choice(("submission/smtpd", "smtpd"))
    yield log.line(service, f"connect from unknown[{ip}]")
    yield log.line(service, f"warning: unknown[{ip}]: SASL LOGIN authentication failed: "
                   "UGFzc3dvcmQ6")  # fmt: skip
    yield log.line(service, f"lost connection after AUTH from unknown[{ip}]")
    yield log.line(service, f"disconnect from unknown[{ip}] ehlo=1 auth=0/1 commands=1/2")


def submission(log: LogWriter) -> Iterator[str]:
    ip, queue_id = log.ip(), log.new_queue_id()
    yield log.line("submission/smtpd", f"connect from client[{ip}]")
    yield log.line("submission/smtpd", f"{queue_id}: client=client[{ip}], sasl_method=PLAIN, "
                   f"sasl_username={log.address()}")  # fmt: skip
    yield log.line("cleanup", f"{queue_id}: message-id=<{queue_id}@client>")
    yield log.line("qmgr", f"{queue_id}: from=<{log.address()}>, size=2048, nrcpt=1 "
                   "(queue active)")  # fmt: skip
    yield log.line("submission/smtpd", f"disconnect from client[{ip}] ehlo=2 starttls=1 auth=1 "
                   "mail=1 rcpt=1 data=1 quit=1 commands=8")  # fmt: skip
    yield from delivery(log, queue_id)
    yield log.line("qmgr", f"{queue_id}: removed")


SESSIONS: tuple[tuple[Callable[[LogWriter], Iterator[str]], float], ...] = (
    (inbound_message, 0.45), (rejected_session, 0.25), (sasl_attack, 0.15), (submission, 0.15),
)  # fmt: skip


def generate(count: int, seed: int = 6, refusals: float = 0.0) -> list[str]:
    """``count`` lines of a busy mail server's log, the sentinel last; ``refusals`` of the
    deliveries refused by a big receiver."""
    log = LogWriter(seed, refusals)
    kinds, weights = zip(*SESSIONS, strict=True)
    lines: list[str] = []
    while len(lines) < count - 1:
        lines.extend(log.random.choices(kinds, weights)[0](log))
    return [*lines[: count - 1], SENTINEL]


def queued_never_removed(count: int, first: int = 0) -> list[str]:
    """qmgr lines of ``count`` new messages whose ``removed`` never comes: their IDs stay."""
    return [
        f"Jan 12 00:00:00 mail postfix/qmgr[1]: {n:010X}: from=<a@example.com>, size=1, "
        "nrcpt=1 (queue active)"
        for n in range(first, first + count)
    ]


def reads(lines: list[str]) -> list[list[str]]:
    """``lines`` as a file follower gets them: one batch per read of ``CHUNK_BYTES``."""
    data = ("\n".join(lines) + "\n").encode()
    splitter = LineSplitter(CHUNK_BYTES)
    return [splitter.feed(data[at : at + CHUNK_BYTES]) for at in range(0, len(data), CHUNK_BYTES)]


def parse_rate(lines: list[str], runs: int, before: list[str] | None = None) -> float:
    """Lines per second through dispatch, parse and count, best of ``runs`` (one core): the
    lines go as a file follower hands them on (a batch per read, through its ``Feed``),
    cut into lines beforehand; ``before`` is fed first, untimed, to set up the state the
    timed lines meet."""
    batches = reads(lines)
    best = float("inf")
    for _ in range(runs):
        dispatcher = LineDispatcher(LogCounters(10))
        feed = Feed(dispatcher.syslog_lines, dispatcher.messages, threading.Lock(), lambda: None)
        for batch in reads(before) if before else ():
            feed.lines(batch)
        started = time.perf_counter()
        for batch in batches:
            feed.lines(batch)
        best = min(best, time.perf_counter() - started)
        total = sum(dispatcher.counters.lines.values())
        assert total == len(lines) + len(before or ()), total
    return len(lines) / best


def in_process(lines: list[str], runs: int) -> bool:
    """Part (1), printed; whether the parse misses its target."""
    rate = parse_rate(lines, runs)
    missed = rate < TARGET_LINES_PER_SECOND
    verdict = "MISSES" if missed else "meets"
    print(f"\nparse and count, one core: {rate:,.0f} lines/s ({verdict} the 200,000 target)")
    first = queued_never_removed(MAX_QUEUED_IDS)
    rate = parse_rate(first, runs)
    print(f"qmgr from= of {len(first):,} new queue IDs, none held before: {rate:,.0f} lines/s")
    more = queued_never_removed(len(lines), MAX_QUEUED_IDS)
    rate = parse_rate(more, runs, before=first)
    print(f"qmgr from= of {len(more):,} new queue IDs, {len(first):,} held before: "
          f"{rate:,.0f} lines/s")  # fmt: skip
    print(f"(the dispatcher from {Path(dispatch.__file__).name})")
    return missed


def metric_sum(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in "{ "
    )


def follow_time(
    log_path: Path, data: bytes, url: str, done: Callable[[], bool], pid: int
) -> tuple[float, float]:
    """Wall seconds from appending ``data`` until ``done()``, and the CPU seconds spent."""
    process = psutil.Process(pid)
    cpu_before = sum(process.cpu_times()[:2])
    started = time.perf_counter()
    with log_path.open("ab") as log:
        log.write(data)
    wait_until(done, 600, f"{url} shows every line")
    wall = time.perf_counter() - started
    return wall, sum(process.cpu_times()[:2]) - cpu_before


def side_by_side(
    lines: list[str], work: Path, before: Path | None, python: str | None
) -> list[tuple[str, float, float]]:
    data = ("\n".join(lines) + "\n").encode()
    ours = {"mail_exporter": None, **({"code before": before} if before else {})}
    peer_log = work / "peer.log"
    peer_log.touch()
    results = []
    with Children() as children:
        started = {}
        for n, (name, code) in enumerate(ours.items()):
            log, config, port = work / f"ours{n}.log", work / f"config{n}.yml", free_port()
            log.touch()
            config.write_text(
                "collectors:\n  logs:\n    enabled: true\n    timeout: 30s\n"
                f"    sources:\n      - path: {log}\n"
            )
            command = exporter_command(config, port, code=code, python=python)
            process = children.start(command, log=work / f"ours{n}.stderr")
            started[name] = (log, f"http://127.0.0.1:{port}/metrics", process)
        peer_port = free_port()
        peer = children.start(
            [PEER, f"--web.listen-address=127.0.0.1:{peer_port}",
             f"--postfix.logfile_path={peer_log}",
             f"--postfix.showq_path={work / 'no-showq'}"],
            log=work / "peer.stderr",
        )  # fmt: skip
        peer_url = f"http://127.0.0.1:{peer_port}/metrics"
        for url, process in [*((u, p) for _, u, p in started.values()), (peer_url, peer)]:
            wait_until(lambda u=url: http_ok(u), 30, url, lambda p=process: p.poll() is None)
        time.sleep(1.0)  # all have opened their (empty) files and sit at the end
        for name, (log, url, process) in started.items():
            # lines come at any moment, not in step with a follower's 250 ms poll
            time.sleep(random.uniform(0, 0.25))
            wall, cpu = follow_time(
                log, data, url,
                lambda u=url: metric_sum(u, "mail_log_lines_total") >= len(lines), process.pid,
            )  # fmt: skip
            results.append((name, wall, cpu))
        wall, cpu = follow_time(
            peer_log,
            data,
            peer_url,
            lambda: metric_sum(peer_url, "postfix_cleanup_messages_rejected_total") >= 1,
            peer.pid,
        )
        results.append((PEER, wall, cpu))
    return results


def spread(values: list[float]) -> str:
    """`` (low to high)`` of several rounds' values, nothing for one."""
    return f" ({min(values):.2f} to {max(values):.2f})" if len(values) > 1 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200,000 lines, one run")
    parser.add_argument(
        "--refusals", type=float, default=0.0, help="share of deliveries refused (e.g. 0.02)"
    )
    parser.add_argument(
        "--before", type=Path, help="also run the exporter of this source tree, side by side"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="side-by-side rounds; medians are compared"
    )
    parser.add_argument(
        "--parse-only",
        action="store_true",
        help="only (1), in this interpreter, with the package its environment has installed",
    )
    parser.add_argument(
        "--python",
        help="run the exporters with this interpreter: ours as its environment has it installed "
        "(e.g. the compiled wheel), --before's tree on it too",
    )
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.lines, arguments.runs = 200_000, 1
    print(machine_line())
    print(time.strftime("%Y-%m-%d %H:%M %Z"))
    lines = generate(arguments.lines, refusals=arguments.refusals)
    missed = in_process(lines, arguments.runs)
    if arguments.parse_only:
        sys.exit(1 if missed else 0)
    if shutil.which(PEER) is None:
        sys.exit(f"{PEER} is not installed: apt-get install {PEER}")
    walls: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as work:
        for round_number in range(arguments.repeat):
            round_dir = Path(work) / f"round{round_number}"
            round_dir.mkdir()
            measured = side_by_side(lines, round_dir, arguments.before, arguments.python)
            for name, wall, cpu in measured:
                walls.setdefault(name, []).append(wall)
                cpus.setdefault(name, []).append(cpu)
    rows = [("exporter", "wall s", "lines/s", "CPU s", "µs CPU/line")]
    for name, each in walls.items():
        wall, cpu = median(each), median(cpus[name])
        per_line = f"{cpu / len(lines) * 1e6:.1f}"
        rows.append((name, f"{wall:.2f}{spread(each)}", f"{len(lines) / wall:,.0f}",
                     f"{cpu:.2f}{spread(cpus[name])}", per_line))  # fmt: skip
    rounds = f", median of {arguments.repeat} rounds" if arguments.repeat > 1 else ""
    print_table(f"Appending {len(lines):,} lines, until /metrics shows them all{rounds}", rows)
    ratios = {
        name: [peer / ours for peer, ours in zip(walls[PEER], walls[name], strict=True)]
        for name in walls.keys() - {PEER}
    }
    for name, each in ratios.items():
        ratio = median(each)
        verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
        rounds = f" (rounds: {' '.join(f'{r:.2f}' for r in each)})" if len(each) > 1 else ""
        print(f"{name}: {ratio:.2f}x {PEER}'s lines per second{rounds} ({verdict} the 3x target)")
    missed = missed or median(ratios["mail_exporter"]) < TARGET_RATIO
    print(f"load average: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
