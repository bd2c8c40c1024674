"""The IMAP probe's mailbox checks on a large store: 10 mailboxes of 10,000 messages each.

Starts a private Dovecot with the quota plugin (count driver) and imap_quota (the test
suite's tests/realservers/dovecot.py) on 127.0.0.1, writes the messages straight into its
Maildir (one file per message, its mtime the internal date: a day apart, oldest first),
lets ``doveadm force-resync`` index them, and probes over IMAPS with a module that reads
all ten mailboxes: per mailbox STATUS (with SIZE), EXAMINE, ESEARCH MIN/MAX, a UID FETCH of
the two ends and GETQUOTAROOT. Timed: the ``mailboxes`` phase of each probe (the whole
mailbox part of the session, after the login), after unmeasured warm-up probes (the first
ones build Dovecot's caches: vsizes for the count driver). Each probe is checked: 10,000
messages per mailbox, the first and last internal dates as written.

Target: the mailbox phase under 200 ms (median) on loopback.

Run: ``.venv/bin/python bench/mailbox_stats.py`` (n=50 probes) or ``--quick`` (n=10).
Needs root and dovecot. Exits 1 when the target is missed or a probe is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

from harness import (
    LOOPBACK,
    REPO,
    Children,
    fill_defaults,
    median,
    not_installed,
    percentile,
    print_table,
    run_interruptibly,
    verdict,
)

sys.path.insert(0, str(REPO))
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes import Phase, run_probe
from mail_exporter.targets import parse_address
from tests.realservers.dovecot import MAIL_OWNER, Dovecot
from tests.realservers.pki import create_pki

MAILBOXES = [f"Box{number}" for number in range(10)]
MESSAGES = 10_000
FIRST_DATE = 1_600_000_000  # 2020-09-13; each later message a day on
TARGET_MS = 200.0
PASSWORD_VARIABLE = "BENCH_MAILBOX_PASSWORD"


def write_maildir(dovecot: Dovecot) -> None:
    """MESSAGES files in each mailbox's cur/, seen, dated a day apart, owned by the mail owner."""
    maildir = dovecot.mail_dir / dovecot.user / "Maildir"
    for name in MAILBOXES:
        folder = maildir / f".{name}"
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "maildirfolder").touch()
        for number in range(MESSAGES):
            date = FIRST_DATE + number * 86400
            path = folder / "cur" / f"{date}.M{number}P1.bench:2,S"
            path.write_bytes(
                f"From: a@test.local\r\nTo: b@test.local\r\nSubject: {name} {number}\r\n"
                f"Message-ID: <{name}.{number}@test.local>\r\n\r\nbody {number}\r\n".encode()
            )
            os.utime(path, (date, date))
    owner = pwd.getpwnam(MAIL_OWNER)
    subprocess.run(
        ["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(dovecot.mail_dir)], check=True
    )
    dovecot.doveadm("force-resync", "-u", dovecot.user, "*")


async def probes(address: str, module: ModuleConfig, n: int, warmup: int) -> list[float]:
    """The mailbox phase of ``n`` probes in ms, after ``warmup`` unmeasured ones."""
    times = []
    last = float(FIRST_DATE + (MESSAGES - 1) * 86400)
    for index in range(warmup + n):
        result = await run_probe(parse_address(address), module, 30.0)
        boxes = [(b.messages, b.oldest, b.newest) for b in result.mailboxes]
        if not result.success or boxes != [(MESSAGES, float(FIRST_DATE), last)] * 10:
            print("\n".join(result.log[-20:]), file=sys.stderr)
            raise SystemExit(f"probe {index} was wrong: {boxes[:2]}")
        if index >= warmup:
            times.append(result.phases[Phase.MAILBOXES] * 1000)
    return times


def run_benchmark(args: argparse.Namespace, children: Children, work: Path) -> int:
    pki = create_pki(work / "pki")
    dovecot = Dovecot(work / "dovecot", pki.server_cert, pki.server_key, quota=True)
    children.on_exit(dovecot.stop)
    dovecot.start()
    started = time.perf_counter()
    write_maildir(dovecot)
    print(f"{len(MAILBOXES)} x {MESSAGES} messages written and indexed in "
          f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
    os.environ[PASSWORD_VARIABLE] = dovecot.password
    module = ModuleConfig.model_validate(
        {
            "protocol": "imap",
            "tls": "implicit",
            "timeout": "30s",
            "tls_config": {"ca_file": str(pki.ca_file)},
            "auth": {"username": dovecot.user, "password_env": PASSWORD_VARIABLE},
            "imap": {"mailboxes": [{"name": name} for name in MAILBOXES]},
        }
    )
    address = f"{LOOPBACK}:{dovecot.imaps_port}"
    times = asyncio.run(probes(address, module, args.n, args.warmup))
    print_table(
        f"mailbox phase of one IMAPS probe, 10 mailboxes x {MESSAGES} messages (n={args.n})",
        [("median ms", "p90 ms", "max ms"),
         (f"{median(times):.1f}", f"{percentile(times, 0.9):.1f}", f"{max(times):.1f}")],
    )  # fmt: skip
    return verdict(median(times) < TARGET_MS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n=10 with 2 warm-up probes")
    parser.add_argument("-n", type=int, help="measured probes (default 50, 10 with --quick)")
    parser.add_argument("--warmup", type=int, help="unmeasured probes first (default 3)")
    args = parser.parse_args()
    fill_defaults(args, n=(50, 10), warmup=(3, 2))
    if not_installed("dovecot"):
        return 2
    return run_interruptibly(
        "bench-mailbox-stats-", lambda children, work: run_benchmark(args, children, work)
    )


if __name__ == "__main__":
    sys.exit(main())
