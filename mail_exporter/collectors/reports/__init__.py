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
"""
