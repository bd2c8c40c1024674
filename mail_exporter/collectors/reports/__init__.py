"""The ``reports`` collector: a mailbox that DMARC aggregate reports, TLS-RPT reports and
notifications are sent to, turned into metrics.

Reading a message is pure work on its bytes, with no I/O: :func:`.message.read_message`
(the one entry point) finds the report payloads of a message (:mod:`.attachments`:
plain, gzip or zip, decompressed with byte caps), parses DMARC aggregate reports
(:mod:`.dmarc`, RFC 7489, XML through defusedxml) and TLS-RPT reports (:mod:`.tlsrpt`,
RFC 8460, JSON), and returns what it understood and what it refused
(:class:`.rejection.Rejected`, with a reason of docs/metrics.md), within the
:class:`.limits.Limits` of the section. Everything in a message comes from strangers:
every size, count, depth and string is bounded before it costs memory.

The collector around them (:mod:`.collector`, registered here) reads the mailbox
(:mod:`.mailbox`), keeps its place in a state file (:mod:`.state`), counts with bounded
labels (:mod:`.tally`), matches notification rules (:mod:`.notifications`) and renders
:mod:`.families`; its section is :mod:`.config`.

Sample output::

    mail_dmarc_report_messages_total{disposition="none",dkim_aligned="true",\
        domain="example.com",reporter="google.com",spf_aligned="true"} 1234.0
    mail_dmarc_unaligned_messages_total{domain="example.com",source="192.0.2.7"} 12.0
    mail_tlsrpt_sessions_total{domain="example.com",policy_type="sts",result="success"} 5326.0
    mail_reports_messages_total{result="processed"} 41.0
    mail_reports_rejected_total{kind="dmarc",reason="entities"} 1.0
    mail_notification_last_timestamp_seconds{rule="nightly-backup",status="success"} 1.7e+09
"""

from mail_exporter.collectors.reports import collector  # noqa: F401  (registers the collector)
