"""How fast the reports collector reads DMARC aggregate report messages.

1,000 messages, each a whole MIME message as a reporter sends it (a text part and the
report gzip-attached as ``application/gzip``), each report of 100 records, built here
from the RFC 7489 fixture of the test suite with known counts; every message goes
through :func:`read_message` (MIME parsing, base64, bounded gunzip, the bounded XML
parse) in this one process, on one core. The sum of the counts read is checked against
the sum built. Printed: the wall time, reports/s and records/s, the process's peak RSS
(``ru_maxrss``, the messages built included), and the time the stdlib's MIME parser
alone takes with each policy (``compat32``, which read_message uses, and
``email.policy.default``).

Target: the 1,000 reports in under 10 s.

    .venv/bin/python bench/reports.py [--quick]
"""

from __future__ import annotations

import argparse
import email
import gzip
import random
import resource
import sys
import time
from email.message import EmailMessage
from email.policy import compat32, default
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import fill_defaults, print_table, verdict
from mail_exporter.collectors.reports.limits import Limits
from mail_exporter.collectors.reports.message import read_message

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/reports/rfc7489-example.xml"
TARGET_SECONDS = 10.0
REPORTS = 1000
RECORDS = 100


def report(number: int, chooser: random.Random) -> tuple[bytes, int]:
    """Report ``number`` of RECORDS records, and the sum of its counts."""
    head, _, rest = FIXTURE.read_text().partition("<record>")
    tail = rest.rpartition("</record>")[2]
    counts = [chooser.randrange(1, 1000) for _ in range(RECORDS)]
    records = "".join(
        f"<record><row><source_ip>198.51.100.{chooser.randrange(1, 255)}</source_ip>"
        f"<count>{count}</count><policy_evaluated><disposition>"
        f"{chooser.choice(['none', 'quarantine', 'reject'])}</disposition>"
        f"<dkim>{chooser.choice(['pass', 'fail'])}</dkim><spf>{chooser.choice(['pass', 'fail'])}"
        "</spf></policy_evaluated></row><identifiers><header_from>example.com</header_from>"
        "</identifiers><auth_results><dkim><domain>example.com</domain><selector>ny</selector>"
        "<result>pass</result></dkim><spf><domain>example.com</domain><scope>mfrom</scope>"
        "<result>pass</result></spf></auth_results></record>"
        for count in counts
    )
    document = head.replace("7489-c-1", f"bench-{number}") + records + tail
    return document.encode(), sum(counts)


def message(number: int, document: bytes) -> bytes:
    mail = EmailMessage()
    mail["From"] = "noreply-dmarc-support@receiver.example"
    mail["To"] = "dmarc@example.com"
    mail["Subject"] = f"Report domain: example.com Submitter: receiver.example Report-ID: {number}"
    mail["Date"] = "Thu, 01 Jan 2015 12:00:00 +0000"
    mail.set_content("This is an aggregate report from receiver.example.\n")
    mail.add_attachment(
        gzip.compress(document),
        maintype="application",
        subtype="gzip",
        filename=f"receiver.example!example.com!1420070400!1420156799!{number}.xml.gz",
    )
    return mail.as_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 reports")
    parser.add_argument("--reports", type=int, default=None)
    args = parser.parse_args()
    fill_defaults(args, reports=(REPORTS, 100))
    chooser = random.Random(7489)
    built = [report(n, chooser) for n in range(args.reports)]
    messages = [message(n, document) for n, (document, _) in enumerate(built)]
    expected = sum(total for _, total in built)
    limits = Limits()

    started = time.perf_counter()
    contents = [read_message(raw, limits) for raw in messages]
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    read = sum(r.count for c in contents for rep in c.dmarc for r in rep.records)
    refused = sum(len(c.rejected) for c in contents)
    if read != expected or refused:
        print(f"read {read} messages of {expected}, {refused} refusals", file=sys.stderr)
        return 1
    mime_seconds = {}
    for name, policy in (("compat32", compat32), ("default", default)):
        began = time.perf_counter()
        for raw in messages:
            for part in email.message_from_bytes(raw, policy=policy).walk():
                part.get_payload(decode=True)
        mime_seconds[name] = time.perf_counter() - began

    records = args.reports * RECORDS
    print_table(
        f"read_message: {args.reports} gzip-attached DMARC reports of {RECORDS} records",
        [
            ("seconds", "reports/s", "records/s", "peak RSS MiB", "target s"),
            (
                f"{seconds:.2f}",
                f"{args.reports / seconds:,.0f}",
                f"{records / seconds:,.0f}",
                f"{peak_mib:.0f}",
                f"{TARGET_SECONDS:g}",
            ),
        ],
    )
    print_table(
        "MIME parsing alone (parse, walk, decode each part)",
        [("policy", "seconds")] + [(k, f"{v:.2f}") for k, v in mime_seconds.items()],
    )
    return verdict(seconds < TARGET_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
