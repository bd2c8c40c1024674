"""Recorded log lines and what each must count: Postfix, Exim, Dovecot and content filters.

Each case is one line as the program logs it (through syslog unless the format says
otherwise) and every counter it must move, and nothing else: the line counter is
checked too, so a line that should be understood can't slip to ``unsupported``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.dispatch import LineDispatcher
from mail_exporter.collectors.logs.domains import REBALANCE_EVERY, TopDomains
from mail_exporter.collectors.logs.render import COUNTERS, DOMAINS

FIXTURES = Path(__file__).parent / "fixtures" / "logs"
H = "Jan 12 10:00:00 mail"  # syslog header before the tag
Effects = dict[tuple[str, tuple[str, ...]], float]


def effects(counters: LogCounters) -> Effects:
    """Every non-zero count, as (attribute, labels) → value; delays as their count."""
    found: Effects = {}
    for attribute in (*COUNTERS, *DOMAINS):
        values = getattr(counters, attribute)
        values = values.snapshot() if hasattr(values, "snapshot") else values
        found.update({(attribute, k): v for k, v in values.items() if v})
    for key, histogram in counters.delays.items():
        found[("delays", key)] = sum(histogram.buckets)
    return found


def run(
    lines: list[str], log_format: str = "syslog", postfix_syslog_names: tuple[str, ...] = ()
) -> LogCounters:
    counters = LogCounters(top_domains=10)
    feed = LineDispatcher(counters, postfix_syslog_names).feeder(log_format)
    for line in lines:
        feed(line)
    return counters


P = "postfix"
POSTFIX_CASES = [
    (f"{H} postfix/smtpd[1]: connect from unknown[192.0.2.1]",
     {("connections", (P, "smtpd")): 1}),
    (f"{H} postfix/submission/smtpd[1]: connect from unknown[192.0.2.1]",
     {("connections", (P, "submission/smtpd")): 1}),
    (f"{H} postfix-out/smtpd[1]: connect from unknown[192.0.2.1]",
     {("connections", (P, "postfix-out/smtpd")): 1}),
    (f"{H} postfix/smtpd[1]: disconnect from unknown[192.0.2.1] ehlo=1 quit=1 commands=2", {}),
    (f"{H} postfix/smtpd[1]: lost connection after AUTH from unknown[192.0.2.1]",
     {("lost_connections", (P, "smtpd", "AUTH")): 1}),
    (f"{H} postfix/smtpd[1]: timeout after END-OF-MESSAGE from unknown[192.0.2.1]",
     {("timeouts", (P, "smtpd", "END-OF-MESSAGE")): 1}),
    (f"{H} postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 454 4.7.1 "
     "<y@outside.example>: Relay access denied; from=<x@example.org> to=<y@outside.example> "
     "proto=ESMTP helo=<[127.0.0.1]>",
     {("rejects", (P, "smtpd", "relay_denied")): 1, ("reject_stages", (P, "smtpd", "RCPT")): 1}),
    (f"{H} postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 Service "
     "unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; from=<x@spam.example> "
     "to=<u@example.com> proto=ESMTP helo=<spam>",
     {("rejects", (P, "smtpd", "rbl")): 1, ("reject_stages", (P, "smtpd", "RCPT")): 1}),
    (f"{H} postfix/smtpd[1]: NOQUEUE: reject: RCPT from mx[192.0.2.1]: 550 5.1.1 <n@example.com>: "
     "Recipient address rejected: User unknown in virtual mailbox table; from=<x@a.example> "
     "to=<n@example.com> proto=ESMTP helo=<mx>",
     {("rejects", (P, "smtpd", "unknown_user")): 1, ("reject_stages", (P, "smtpd", "RCPT")): 1}),
    (f"{H} postfix/smtpd[1]: NOQUEUE: reject: EHLO from unknown[192.0.2.1]: 504 5.5.2 <localhost>: "
     "Helo command rejected: need fully-qualified hostname; proto=SMTP helo=<localhost>",
     {("rejects", (P, "smtpd", "helo")): 1, ("reject_stages", (P, "smtpd", "EHLO")): 1}),
    (f"{H} postfix/smtpd[1]: NOQUEUE: reject: MAIL from unknown[192.0.2.1]: 553 5.7.1 <a@b>: "
     "Sender address rejected: not logged in; from=<a@b> proto=ESMTP helo=<x>",
     {("rejects", (P, "smtpd", "sender")): 1, ("reject_stages", (P, "smtpd", "MAIL")): 1}),
    (f"{H} postfix/smtpd[1]: NOQUEUE: reject: CONNECT from unknown[192.0.2.1]: 554 5.7.1 "
     "<unknown[192.0.2.1]>: Client host rejected: Access denied; proto=SMTP",
     {("rejects", (P, "smtpd", "client")): 1, ("reject_stages", (P, "smtpd", "CONNECT")): 1}),
    (f"{H} postfix/smtpd[1]: 4F3A21C0: milter-reject: END-OF-MESSAGE from mx[192.0.2.1]: 5.7.1 "
     "Spam message rejected; from=<x@spam.example> to=<u@example.com> proto=ESMTP helo=<mx>",
     {("rejects", (P, "smtpd", "spam")): 1,
      ("reject_stages", (P, "smtpd", "END-OF-MESSAGE")): 1}),
    (f"{H} postfix/smtpd[1]: 4F3A21C0: milter-reject: END-OF-MESSAGE from mx[192.0.2.1]: 5.7.1 "
     "rejected by DMARC policy for example.com; from=<x@example.com> to=<u@example.net> "
     "proto=ESMTP helo=<mx>",
     {("rejects", (P, "smtpd", "milter")): 1,
      ("reject_stages", (P, "smtpd", "END-OF-MESSAGE")): 1}),
    (f"{H} postfix/smtpd[1]: 4F3A21C0: reject: DATA from mx[192.0.2.1]: 550 5.7.1 virus found; "
     "from=<x@a.example> to=<u@example.net> proto=ESMTP helo=<mx>",
     {("rejects", (P, "smtpd", "malware")): 1, ("reject_stages", (P, "smtpd", "DATA")): 1}),
    (f"{H} postfix/cleanup[1]: 4F3A21C0: reject: header Subject: win from unknown[192.0.2.9]; "
     "from=<s@spam.example> to=<u@example.com> proto=ESMTP helo=<spam>: 5.7.1 message content "
     "rejected",
     {("rejects", (P, "cleanup", "content")): 1, ("reject_stages", (P, "cleanup", "header")): 1}),
    (f"{H} postfix/smtpd[1]: NOQUEUE: reject_warning: RCPT from unknown[192.0.2.1]: 554 5.7.1 "
     "<y@o.example>: Relay access denied; from=<x@a.example> to=<y@o.example> proto=ESMTP", {}),
    (f"{H} postfix/submission/smtpd[1]: warning: unknown[192.0.2.1]: SASL LOGIN authentication "
     "failed: UGFzc3dvcmQ6",
     {("auth_failures", (P, "submission/smtpd")): 1}),
    (f"{H} postfix/submission/smtpd[1]: 3450E2141DB: client=unknown[127.0.0.1], sasl_method=PLAIN, "
     "sasl_username=probe@test.local",
     {("logins", (P, "submission/smtpd", "PLAIN")): 1,
      ("submitted", (P, "submission/smtpd")): 1}),
    (f"{H} postfix/smtpd[1]: 4F3A21C0: client=mx.example.net[198.51.100.5]",
     {("submitted", (P, "smtpd")): 1}),
    (f"{H} postfix/smtpd[1]: NOQUEUE: client=mx.example.net[198.51.100.5]", {}),
    (f"{H} postfix/smtpd[1]: warning: hostname mx.example does not resolve to address 192.0.2.1",
     {("problems", (P, "smtpd", "warning")): 1, ("problem_classes", (P, "warning", "dns")): 1}),
    (f"{H} postfix/smtpd[1]: Anonymous TLS connection established from mx[192.0.2.1]: TLSv1.3 "
     "with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
     {("tls_connections", (P, "smtpd", "TLS 1.3", "anonymous")): 1}),
    (f"{H} postfix/smtp[1]: Verified TLS connection established to mx.example.com[192.0.2.1]:25: "
     "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
     {("tls_connections", (P, "smtp", "TLS 1.2", "verified")): 1}),
    (f"{H} postfix/qmgr[1]: 1FCB42141C0: from=<alice@Example.ORG>, size=317, nrcpt=1 "
     "(queue active)",
     {("received", (P,)): 1, ("sender_domains", (P, "example.org")): 1}),
    (f"{H} postfix/qmgr[1]: 2DC4E2141DA: from=<>, size=2362, nrcpt=1 (queue active)",
     {("received", (P,)): 1, ("sender_domains", (P, "none")): 1}),
    (f"{H} postfix/qmgr[1]: 1FCB42141C0: from=<a@example.org>, status=expired, returned to sender",
     {("deliveries", (P, "qmgr", "expired")): 1}),
    (f"{H} postfix/qmgr[1]: 1FCB42141C0: removed", {}),
    (f"{H} postfix/lmtp[1]: 1FCB42141C0: to=<probe@test.local>, relay=127.0.0.1[127.0.0.1]:52775, "
     "delay=0.06, delays=0.01/0.02/0/0.03, dsn=2.0.0, status=sent (250 2.0.0 <probe@test.local> "
     "Saved)",
     {("deliveries", (P, "lmtp", "sent")): 1, ("dsn_classes", (P, "lmtp", "2")): 1,
      ("recipient_domains", (P, "test.local", "sent")): 1,
      ("delays", (P, "lmtp", "before_queue_manager")): 1,
      ("delays", (P, "lmtp", "queue_manager")): 1, ("delays", (P, "lmtp", "connection_setup")): 1,
      ("delays", (P, "lmtp", "transmission")): 1}),
    (f"{H} postfix/smtp[1]: 20AA12141C4: to=<bob@elsewhere.example>, relay=none, delay=0.03, "
     "delays=0/0.03/0/0, dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:50897: "
     "Connection refused)",
     {("deliveries", (P, "smtp", "deferred")): 1, ("dsn_classes", (P, "smtp", "4")): 1,
      ("recipient_domains", (P, "elsewhere.example", "deferred")): 1}),
    (f"{H} postfix/relay/smtp[1]: 20AA12141C4: to=<b@e.example>, relay=r[192.0.2.1]:25, delay=1, "
     "delays=0/0/0.5/0.5, dsn=5.0.0, status=bounced (host r said: 550 no)",
     {("deliveries", (P, "relay/smtp", "bounced")): 1, ("dsn_classes", (P, "relay/smtp", "5")): 1,
      ("recipient_domains", (P, "e.example", "bounced")): 1,
      ("refusals", (P, "e.example", "bounced", "other")): 1,
      ("refusal_codes", (P, "5", "other")): 1,
      ("delays", (P, "relay/smtp", "before_queue_manager")): 1,
      ("delays", (P, "relay/smtp", "queue_manager")): 1,
      ("delays", (P, "relay/smtp", "connection_setup")): 1,
      ("delays", (P, "relay/smtp", "transmission")): 1}),
    (f"{H} postfix/local[1]: 5A: to=<root@mail.example>, orig_to=<root>, relay=local, delay=0.1, "
     "delays=0/0/0/0.1, dsn=4.3.0, status=SOFTBOUNCE (mailbox full)",
     {("deliveries", (P, "local", "deferred")): 1, ("dsn_classes", (P, "local", "4")): 1,
      ("recipient_domains", (P, "mail.example", "deferred")): 1}),
    (f"{H} postfix/smtp[1]: 5A: to=<a@b.example>, relay=none, delay=0, delays=0/0/0/0, dsn=2.1.5, "
     "status=deliverable (address verification)", {}),
    (f"{H} postfix/smtp[1]: connect to 127.0.0.1[127.0.0.1]:50897: Connection refused", {}),
    (f"{H} postfix/bounce[1]: 2166B2141C5: sender non-delivery notification: 2DC4E2141DA",
     {("bounces", (P, "non_delivery")): 1}),
    (f"{H} postfix/bounce[1]: 2166B2141C5: sender delay notification: 2DC4E2141DB",
     {("bounces", (P, "delay")): 1}),
    (f"{H} postfix/cleanup[1]: 1FCB42141C0: message-id=<2026@mail.test.local>", {}),
    (f"{H} postfix/pickup[1]: 1FCB42141C0: uid=0 from=<root>", {("submitted", (P, "pickup")): 1}),
    (f"{H} postfix-out/pickup[1]: 2DC4E2141DA: uid=1000 from=<alice@example.org>",
     {("submitted", (P, "postfix-out/pickup")): 1}),
    (f"{H} postfix/pickup[1]: warning: maildrop/4F3A21C0: error reading file: Invalid argument",
     {("problems", (P, "pickup", "warning")): 1, ("problem_classes", (P, "warning", "other")): 1}),
    (f"{H} postfix/anvil[1]: statistics: max connection rate 1/60s for (smtp:192.0.2.1)", {}),
    (f"{H} postfix/master[1]: fatal: bind 0.0.0.0 port 25: Address already in use",
     {("problems", (P, "master", "fatal")): 1, ("problem_classes", (P, "fatal", "other")): 1}),
    (f"{H} postfix/postscreen[1]: CONNECT from [192.0.2.1]:5678 to [192.0.2.2]:25",
     {("postscreen", (P, "connect")): 1}),
    (f"{H} postfix/postscreen[1]: PASS NEW [192.0.2.1]:5678", {("postscreen", (P, "pass_new")): 1}),
    (f"{H} postfix/postscreen[1]: DNSBL rank 3 for [192.0.2.1]:5678",
     {("postscreen", (P, "dnsbl")): 1}),
    (f"{H} postfix/postscreen[1]: PREGREET 11 after 0.1 from [192.0.2.1]:5678: EHLO spam\\r\\n",
     {("postscreen", (P, "pregreet")): 1}),
    (f"{H} postfix/postscreen[1]: HANGUP after 0.5 from [192.0.2.1]:5678 in tests after SMTP "
     "handshake", {("postscreen", (P, "hangup")): 1}),
    (f"{H} postfix/postscreen[1]: DISCONNECT [192.0.2.1]:5678", {}),
    (f"{H} postfix/postscreen[1]: NOQUEUE: reject: RCPT from [192.0.2.1]:5678: 550 5.7.1 Service "
     "unavailable; client [192.0.2.1] blocked using zen.spamhaus.org; from=<a@b.example>, "
     "to=<c@d.example>, proto=ESMTP, helo=<spam>",
     {("rejects", (P, "postscreen", "rbl")): 1, ("reject_stages", (P, "postscreen", "RCPT")): 1}),
    # Recorded from the test suite's Postfix 3.7 (tests/fixtures/logs/README.md):
    # postsuper -e, then the delivery attempt it asks for; a hash table rebuilt while
    # smtpd had it open; a main.cf entry given twice.
    (f"{H} postfix/qmgr[28593]: 315FD20E1B7: from=<alice@example.org>, status=force-expired, "
     "returned to sender", {("deliveries", (P, "qmgr", "expired")): 1}),
    (f"{H} postfix/qmgr[1]: 315FD20E1B7: from=<alice@example.org>, status=expired, returned to "
     "sender", {("deliveries", (P, "qmgr", "expired")): 1}),
    (f"{H} postfix/postsuper[28709]: 315FD20E1B7: expired", {}),
    (f"{H} postfix/smtpd[28595]: table hash:/tmp/f14/run1/postfix/config/access(0,lock|fold_fix|"
     "utf8_request) has changed -- restarting",
     {("problem_classes", (P, "info", "table_changed")): 1}),
    (f"{H} postfix/smtpd[27884]: warning: /tmp/logscratch/run/p/config/main.cf, line 40: "
     "overriding earlier entry: mynetworks=127.0.0.0/8, [::1]/128",
     {("problems", (P, "smtpd", "warning")): 1, ("problem_classes", (P, "warning", "config")): 1}),
]  # fmt: skip

OWN_NAMES = ("mta-out", "submission")
"""``syslog_name = mta-out`` in a second instance's main.cf, ``-o syslog_name=submission``."""
OWN_NAME_CASES = [
    (f"{H} mta-out/smtpd[1]: connect from unknown[192.0.2.1]",
     {("connections", (P, "mta-out/smtpd")): 1}),
    (f"{H} submission/smtpd[1]: warning: unknown[192.0.2.1]: SASL PLAIN authentication failed: ",
     {("auth_failures", (P, "submission/smtpd")): 1}),
    (f"{H} submission/smtpd[1]: Anonymous TLS connection established from unknown[192.0.2.1]: "
     "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
     {("tls_connections", (P, "submission/smtpd", "TLS 1.3", "anonymous")): 1}),
    (f"{H} mta-out/submission/smtpd[1]: 3450E2141DB: client=unknown[192.0.2.1], "
     "sasl_method=PLAIN, sasl_username=alice@example.org",
     {("logins", (P, "mta-out/submission/smtpd", "PLAIN")): 1,
      ("submitted", (P, "mta-out/submission/smtpd")): 1}),
    (f"{H} mta-out/qmgr[1]: 1FCB42141C0: from=<alice@example.org>, size=317, nrcpt=1 "
     "(queue active)",
     {("received", (P,)): 1, ("sender_domains", (P, "example.org")): 1}),
    (f"{H} mta-out/smtp[1]: 1FCB42141C0: to=<bob@example.net>, relay=mx.example.net"
     "[198.51.100.5]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: "
     "queued as 4F3A)",
     {("deliveries", (P, "mta-out/smtp", "sent")): 1, ("dsn_classes", (P, "mta-out/smtp", "2")): 1,
      ("recipient_domains", (P, "example.net", "sent")): 1,
      **{("delays", (P, "mta-out/smtp", stage)): 1 for stage in
         ("before_queue_manager", "queue_manager", "connection_setup", "transmission")}}),
    (f"{H} mta-out/master[1]: warning: process /usr/lib/postfix/sbin/smtpd pid 9 exit status 1",
     {("problems", (P, "mta-out/master", "warning")): 1,
      ("problem_classes", (P, "warning", "process")): 1}),
]  # fmt: skip

E = "exim"
EXIM_CASES = [
    ("2024-01-12 10:00:01 SMTP connection from [198.51.100.7]:40112 (TCP/IP connection count = 1)",
     {("connections", (E, "smtp")): 1}),
    ("2024-01-12 10:00:01 1rOHxx-000abc-Ab <= alice@example.org H=mx [198.51.100.7] P=esmtps S=2048",
     {("received", (E,)): 1, ("submitted", (E, "esmtps")): 1,
      ("sender_domains", (E, "example.org")): 1}),
    ("2024-01-12 10:00:02 1rOHxx-000abc-Ab => bob@example.com R=local_user T=local_delivery",
     {("deliveries", (E, "local_delivery", "sent")): 1,
      ("recipient_domains", (E, "example.com", "sent")): 1}),
    ("2024-01-12 10:00:03.456 [2345] 1sbzGv-0000000059W-1nJq <= <> R=1rOHxx-000abc-Ab P=local",
     {("received", (E,)): 1, ("sender_domains", (E, "none")): 1}),
    ("2024-01-12 10:00:04 1sbzGv-0000000059W-1nJq == d@remote.example R=dnslookup T=remote_smtp "
     "defer (-44): 451 4.7.1 Greylisted",
     {("deliveries", (E, "remote_smtp", "deferred")): 1,
      ("recipient_domains", (E, "remote.example", "deferred")): 1}),
    ("2024-01-12 10:00:05 1sbzGv-0000000059W-1nJq ** lost@nowhere.example: Unrouteable address",
     {("deliveries", (E, "none", "bounced")): 1,
      ("recipient_domains", (E, "nowhere.example", "bounced")): 1}),
    ("2024-01-12 10:00:06 1sbzGv-0000000059W-1nJq Frozen (delivery error message)",
     {("frozen", (E,)): 1}),
    ("2024-01-12 10:00:07 H=(spammer) [192.0.2.1]:5123 F=<x@spam.example> rejected RCPT "
     "<y@elsewhere.example>: relay not permitted",
     {("rejects", (E, "smtp", "relay_denied")): 1, ("reject_stages", (E, "smtp", "RCPT")): 1}),
    ("2024-01-12 10:00:09 H=(spammer) [192.0.2.2]:5124 F=<x@spam.example> rejected after DATA: "
     "This message scored 15.2 spam points.",
     {("rejects", (E, "smtp", "spam")): 1, ("reject_stages", (E, "smtp", "DATA")): 1}),
    ("2024-01-12 10:00:11 H=[192.0.2.4]:5126 rejected connection in \"connect\" ACL: 192.0.2.4 is "
     "listed in zen.spamhaus.org",
     {("rejects", (E, "smtp", "rbl")): 1, ("reject_stages", (E, "smtp", "CONNECT")): 1}),
    ("2024-01-12 10:00:12 dovecot_login authenticator failed for (User) [192.0.2.5]:5127: 535 "
     "Incorrect authentication data (set_id=admin)",
     {("auth_failures", (E, "smtp")): 1}),
    ("2024-01-12 10:00:13 SMTP connection from (spammer) [192.0.2.1]:5123 lost while reading "
     "message data", {("lost_connections", (E, "smtp", "DATA")): 1}),
    ("2024-01-12 10:00:13 1rOHz0-000abc-Kl <= root@mail.example U=root P=local S=420 "
     "id=E1rOHz0-000abc-Kl@mail.example",
     {("received", (E,)): 1, ("submitted", (E, "local")): 1,
      ("sender_domains", (E, "mail.example")): 1}),
    # R= and P= in the subject are not fields: a submission with its own P=esmtpa
    ("2024-01-12 10:00:13 1rOHz1-000abc-Mn <= carol@example.org H=(laptop) [203.0.113.9] "
     "P=esmtpa A=dovecot_plain:carol S=700 id=4@example.org T=\"re: R=1 P=x\"",
     {("received", (E,)): 1, ("submitted", (E, "esmtpa")): 1,
      ("sender_domains", (E, "example.org")): 1}),
    ("2024-01-12 10:00:14 Start queue run: pid=3456", {}),
    ("Envelope-from: <x@spam.example>", {}),
    ("P Received: from [192.0.2.2] (helo=spammer)", {}),
]  # fmt: skip

EXIM_TLS_CASES = [
    # GnuTLS (Debian's exim4), TLS 1.3 from a server without a client certificate
    ("2024-01-12 10:00:01 1rOHxx-000abc-Ab <= alice@example.org H=mx.example.org "
     "[198.51.100.7]:40112 I=[192.0.2.25]:25 P=esmtps X=TLS1.3:TLS_AES_256_GCM_SHA384:256 "
     "SNI=mail.example.com S=2048 id=20240112.1@example.org",
     {("received", (E,)): 1, ("submitted", (E, "esmtps")): 1,
      ("sender_domains", (E, "example.org")): 1,
      ("tls_connections", (E, "smtp", "TLS 1.3", "anonymous")): 1}),
    # a release that writes CV=no for every client: no certificate seen, so anonymous
    ("2024-01-12 10:00:02 1iGHiT-00007b-Na <= fw@deneb.example H=(deneb.example) "
     "[172.17.203.2] P=esmtps X=TLS1.2:ECDHE_RSA_AES_256_GCM_SHA384:256 CV=no S=72580 "
     "id=87h84pgf6h.fsf@deneb.example",
     {("received", (E,)): 1, ("submitted", (E, "esmtps")): 1,
      ("sender_domains", (E, "deneb.example")): 1,
      ("tls_connections", (E, "smtp", "TLS 1.2", "anonymous")): 1}),
    # an older OpenSSL build: TLSv1.2, submission with a login, a subject with " X="
    ("2024-01-12 10:00:03 1hpltZ-00ECG0-Rv <= user@example.com H=(DESKTOP2L8P8MT) "
     "[203.0.113.9]:63715 P=esmtpsa X=TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384:256 CV=no "
     "A=dovecot_login:user@example.com S=13483 id=abc@example.com T=\"re: X=TLS1.3:x:1\" "
     "for someone@example.net",
     {("received", (E,)): 1, ("submitted", (E, "esmtpsa")): 1,
      ("sender_domains", (E, "example.com")): 1,
      ("tls_connections", (E, "smtp", "TLS 1.2", "anonymous")): 1}),
    # a verified client certificate; one that was not verified (its DN shows it was sent)
    ("2024-01-12 10:00:04 1rOHy1-000abc-Cd <= relay@partner.example H=mx.partner.example "
     "[198.51.100.9]:41000 P=esmtps X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes "
     "DN=\"CN=mx.partner.example\" S=4096 id=1@partner.example",
     {("received", (E,)): 1, ("submitted", (E, "esmtps")): 1,
      ("sender_domains", (E, "partner.example")): 1,
      ("tls_connections", (E, "smtp", "TLS 1.3", "trusted")): 1}),
    ("2024-01-12 10:00:05 1rOHy2-000abc-Ef <= relay@partner.example H=mx.partner.example "
     "[198.51.100.9]:41002 P=esmtps X=TLS1.2:ECDHE_RSA_AES_256_GCM_SHA384:256 CV=no "
     "DN=\"CN=self-signed.partner.example\" S=4096 id=2@partner.example",
     {("received", (E,)): 1, ("submitted", (E, "esmtps")): 1,
      ("sender_domains", (E, "partner.example")): 1,
      ("tls_connections", (E, "smtp", "TLS 1.2", "untrusted")): 1}),
    # TLS 1.0 as GnuTLS names it: the same label as Postfix's TLSv1
    ("2024-01-12 10:00:06 1rOHy3-000abc-Gh <= old@legacy.example H=legacy.example "
     "[198.51.100.10] P=esmtps X=TLS1.0:RSA_AES_256_CBC_SHA1:256 S=900",
     {("received", (E,)): 1, ("submitted", (E, "esmtps")): 1,
      ("sender_domains", (E, "legacy.example")): 1,
      ("tls_connections", (E, "smtp", "TLS 1.0", "anonymous")): 1}),
    # plaintext arrivals count as nothing here, even with " X=" in the subject
    ("2024-01-12 10:00:07 1rOHy4-000abc-Ij <= plain@example.org H=mx.example.org "
     "[198.51.100.7] P=esmtp S=512 id=3@example.org T=\"X=TLS1.3:fake:256\"",
     {("received", (E,)): 1, ("submitted", (E, "esmtp")): 1,
      ("sender_domains", (E, "example.org")): 1}),
    # outbound: verified, DANE, unverified
    ("2024-01-12 10:00:08 1rOHxx-000abc-Ab => bob@remote.example R=dnslookup T=remote_smtp "
     "H=mx.remote.example [203.0.113.5] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes "
     "C=\"250 2.0.0 Ok: queued as 4F3A21C0\"",
     {("deliveries", (E, "remote_smtp", "sent")): 1,
      ("recipient_domains", (E, "remote.example", "sent")): 1,
      ("tls_connections", (E, "remote_smtp", "TLS 1.3", "verified")): 1}),
    ("2024-01-12 10:00:09 1rOHxx-000abc-Ab => carol@dane.example R=dnslookup T=remote_smtp "
     "H=mx.dane.example DS [203.0.113.6]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=dane "
     "C=\"250 2.0.0 Ok\"",
     {("deliveries", (E, "remote_smtp", "sent")): 1,
      ("recipient_domains", (E, "dane.example", "sent")): 1,
      ("tls_connections", (E, "remote_smtp", "TLS 1.3", "verified")): 1}),
    ("2024-01-12 10:00:10 1bjqi8-00051z-68 => ejohnson@customer.example <EJohnson@customer.example> "
     "R=send_via_smarthost T=smarthost_smtp S=110936 H=smarthost.example [54.244.228.61] "
     "X=TLSv1.2:DHE-RSA-AES256-GCM-SHA384:256 CV=no A=smarthost_login "
     "C=\"250 2.0.0 Ok: queued as 994601BC148\"",
     {("deliveries", (E, "smarthost_smtp", "sent")): 1,
      ("recipient_domains", (E, "customer.example", "sent")): 1,
      ("tls_connections", (E, "smarthost_smtp", "TLS 1.2", "untrusted")): 1}),
    # TCP Fast Open (" TFO*") is a new connection; no CV= (selector off) is unknown
    ("2024-01-12 10:00:11 1rOHy5-000abc-Kl => dave@fast.example R=dnslookup T=remote_smtp "
     "H=mx.fast.example [203.0.113.7]:25 TFO* X=TLS1.3:TLS_AES_128_GCM_SHA256:128 "
     "C=\"250 ok\"",
     {("deliveries", (E, "remote_smtp", "sent")): 1,
      ("recipient_domains", (E, "fast.example", "sent")): 1,
      ("tls_connections", (E, "remote_smtp", "TLS 1.3", "unknown")): 1}),
    # the same session again: a further recipient (->), a connection kept open (*)
    ("2024-01-12 10:00:12 1bjqi8-00051z-68 -> jgreene@customer.example R=send_via_smarthost "
     "T=smarthost_smtp H=smarthost.example [54.244.228.61] "
     "X=TLSv1.2:DHE-RSA-AES256-GCM-SHA384:256 CV=no C=\"250 2.0.0 Ok: queued as 994601BC149\"",
     {("deliveries", (E, "smarthost_smtp", "sent")): 1,
      ("recipient_domains", (E, "customer.example", "sent")): 1}),
    ("2024-01-12 10:00:13 1rOHy6-000abc-Mn => erin@remote.example R=dnslookup T=remote_smtp "
     "H=mx.remote.example [203.0.113.5]* X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes "
     "C=\"250 2.0.0 Ok: queued as 4F3A21C1\"",
     {("deliveries", (E, "remote_smtp", "sent")): 1,
      ("recipient_domains", (E, "remote.example", "sent")): 1}),
    # plaintext delivery whose reply happens to contain " X="
    ("2024-01-12 10:00:14 1rOHy7-000abc-Op => frank@plain.example R=dnslookup T=remote_smtp "
     "H=mx.plain.example [203.0.113.8] C=\"250 queued X=TLS1.3:fake:256\"",
     {("deliveries", (E, "remote_smtp", "sent")): 1,
      ("recipient_domains", (E, "plain.example", "sent")): 1}),
]  # fmt: skip

D = "dovecot"
DOVECOT_FILE_CASES = [
    ("Nov 28 01:51:16 imap-login: Info: Login: user=<probe@test.local>, method=PLAIN, "
     "rip=127.0.0.1, lip=127.0.0.1, mpid=27936, secured, session=<aP+PaUxh7Ih/AAAB>",
     {("logins", (D, "imap", "PLAIN")): 1}),
    ("Nov 28 01:51:16 imap-login: Info: Disconnected: Connection closed (auth failed, 3 attempts in "
     "4 secs): user=<probe@test.local>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured, "
     "session=<HLGIaUxh5Ih/AAAB>",
     {("auth_failures", (D, "imap")): 3, ("disconnects", (D, "imap", "auth_failed")): 1}),
    ("Nov 28 01:51:14 pop3-login: Info: Disconnected: Connection closed (no auth attempts in 0 "
     "secs): user=<>, rip=::1, lip=::1, TLS handshaking: Connection closed, session=<fEht>",
     {("disconnects", (D, "pop3", "no_auth_attempts")): 1}),
    ("Nov 28 01:51:16 imap(probe@test.local)<27936><aP+PaUxh7Ih/AAAB>: Info: Disconnected: Logged "
     "out in=12 out=477 deleted=0 expunged=0 trashed=0",
     {("disconnects", (D, "imap", "logged_out")): 1}),
    ("Nov 28 01:51:15 lmtp(probe@test.local)<27762><CML1CJMzCmtybAAAg+zDdQ>: Info: msgid=<2026@mail"
     ".test.local>: saved mail to INBOX", {("deliveries", (D, "lmtp", "sent")): 1}),
    ("Nov 28 01:51:14 lmtp(27745): Info: Connect from 127.0.0.1", {}),
    ("Nov 28 01:51:19 master: Warning: Killed with signal 15 (by pid=27738 uid=0 code=kill)",
     {("problems", (D, "master", "warning")): 1}),
    ("Nov 28 01:51:14 master: Info: Dovecot v2.3.19.1 (9b53102964) starting up for imap, pop3", {}),
    # Recorded from the test suite's Dovecot 2.3 with a PAM passdb before the passwd-file one
    # (tests/fixtures/logs/README.md): one wrong password, one line from each passdb.
    ("Dec 06 15:32:37 auth-worker(28602): Info: conn unix:auth-worker (pid=28446,uid=104): "
     "auth-worker<1>: pam(root,127.0.0.1,<R8qG0fhhRs1/AAAB>): pam_authenticate() failed: "
     "Authentication failure (Password mismatch?)",
     {("passdb_failures", (D, "pam", "password_mismatch")): 1}),
    ("Dec 06 15:32:37 auth: Info: passwd-file(root,127.0.0.1,<R8qG0fhhRs1/AAAB>): unknown user",
     {("passdb_failures", (D, "passwd-file", "unknown_user")): 1}),
    ("Dec 06 15:32:37 imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 1 "
     "attempts in 2 secs): user=<root>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured, "
     "session=<R8qG0fhhRs1/AAAB>",
     {("auth_failures", (D, "imap")): 1, ("disconnects", (D, "imap", "auth_failed")): 1}),
    # Dovecot 2.4, quoted in https://github.com/fail2ban/fail2ban/issues/4196
    ("Jun 23 00:11:05 imap-login: Info: Login aborted: Connection closed (auth failed, 3 attempts "
     "in 16 secs) (auth_failed): user=<info@example.com>, method=PLAIN, rip=1.2.3.4, "
     "lip=2.3.4.5, TLS, session=<CvN+E95Uf4e7eEnj>",
     {("auth_failures", (D, "imap")): 3, ("disconnects", (D, "imap", "auth_failed")): 1}),
    ("Jun 23 00:10:49 auth-worker(info@example.com,1.2.3.4)<4001084><CvN+E95Uf4e7eEnj>: request "
     "[12]: Info: sql: Password mismatch (given password: XxxxXXxx123)",
     {("passdb_failures", (D, "sql", "password_mismatch")): 1}),
    ("Jun 23 00:10:57 auth(info@example.com,1.2.3.4,sasl:login)<CvN+E95Uf4e7eEnj>: Info: sql: "
     "Password mismatch (given password: XxxxXXxx123)",
     {("passdb_failures", (D, "sql", "password_mismatch")): 1}),
    # Dovecot (2.3, submission-login), quoted in https://github.com/Mailu/Mailu/issues/3398
    ("Sep 02 23:28:51 submission-login: Info: Disconnected: Aborted login by logging out (auth "
     "failed, 1 attempts in 2 secs): user=<admin>, method=LOGIN, rip=80.94.92.156, rport=1731, "
     "lip=192.168.203.5, lport=587, TLS",
     {("auth_failures", (D, "submission")): 1,
      ("disconnects", (D, "submission", "auth_failed")): 1}),
]  # fmt: skip
DOVECOT_SYSLOG_CASES = [
    # Dovecot 2.4, quoted in https://github.com/fail2ban/fail2ban/issues/4113 (lip= as quoted)
    (f"{H} dovecot: imap-login: Login aborted: Connection closed: SSL_accept() failed: "
     "error:0A000416:SSL routines::ssl/tls alert certificate unknown: SSL alert number 46 "
     "(disconnected during TLS handshake) (tls_handshake_not_finished): user=<>, "
     "rip=92.217.222.163, lip=my.server.ip.adress, TLS handshaking: SSL_accept() failed: "
     "error:0A000416:SSL routines::ssl/tls alert certificate unknown: SSL alert number 46, "
     "session=<YvpE3olFy+tc2d6j>", {("disconnects", (D, "imap", "tls_error")): 1}),
    # submission-login session ends, quoted in https://github.com/fail2ban/fail2ban/pull/2795
    (f"{H} dovecot: submission-login: Client has quit the connection (auth failed, 1 attempts in "
     "3 secs): user=<user2>, method=LOGIN, rip=183.136.134.133, lip=0.0.0.0",
     {("auth_failures", (D, "submission")): 1,
      ("disconnects", (D, "submission", "auth_failed")): 1}),
    (f"{H} dovecot: submission-login: Remote closed connection (auth failed, 1 attempts in 2 "
     "secs): user=<user5>, method=PLAIN, rip=92.55.237.16, lip=0.0.0.0",
     {("auth_failures", (D, "submission")): 1,
      ("disconnects", (D, "submission", "auth_failed")): 1}),
    # PAM's own line, tagged with the auth process: fail2ban's sample log
    # (fail2ban/tests/files/logs/dovecot in https://github.com/fail2ban/fail2ban)
    (f"{H} auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 "
     "tty=dovecot ruser=informix rhost=80.255.3.104",
     {("passdb_failures", (D, "pam_unix", "failed")): 1}),
    # auth-worker lines of 2.2, quoted in https://github.com/fail2ban/fail2ban/pull/932 and
    # https://github.com/fail2ban/fail2ban/issues/1059
    (f"{H} dovecot: auth-worker(304): pam(username,1.2.3.4): pam_authenticate() failed: "
     "Authentication failure (password mismatch?)",
     {("passdb_failures", (D, "pam", "password_mismatch")): 1}),
    (f"{H} dovecot: auth-worker(1668): sql(user@domain.com,X.Y.Z.Z): unknown user (given "
     "password: XXX)", {("passdb_failures", (D, "sql", "unknown_user")): 1}),
    (f"{H} dovecot: imap-login: Login: user=<u@example.com>, method=LOGIN, rip=192.0.2.1, "
     "lip=192.0.2.2, mpid=1, TLS, session=<x>", {("logins", (D, "imap", "LOGIN")): 1}),
    (f"{H} dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<a>, "
     "method=PLAIN, rip=192.0.2.1, lip=192.0.2.2, session=<x>",
     {("auth_failures", (D, "pop3")): 1, ("disconnects", (D, "pop3", "auth_failed")): 1}),
    (f"{H} dovecot: imap(u@example.com)<1><x>: Disconnected for inactivity in=10 out=20",
     {("disconnects", (D, "imap", "inactivity")): 1}),
    (f"{H} dovecot: auth: Error: passwd-file /etc/dovecot/users: open failed",
     {("problems", (D, "auth", "error")): 1}),
]  # fmt: skip

FILTER_CASES = [
    (f"{H} rspamd[1]: <abc123>; task; rspamd_task_write_log: id: <m@x>, qid: <4F3A>, ip: 192.0.2.1, "
     "from: <a@b>, (default: T (reject): [16.20/15.00] [BAYES_SPAM(5.1){99%;}]), len: 2048, "
     "time: 50ms", {("filter_results", ("rspamd", "spam", "reject")): 1}),
    (f"{H} rspamd[1]: <abc123>; task; rspamd_task_write_log: id: <m@x>, (default: F (no action): "
     "[0.50/15.00] [ARC_NA(0.00){}]), len: 100", {("filter_results", ("rspamd", "clean", "no_action")): 1}),
    (f"{H} rspamd[1]: <abc>; main; rspamd_map_helper: loaded map /etc/rspamd/maps.d/x", {}),
    (f"{H} amavis[1]: (01234-01) Blocked SPAM {{RejectedInbound,Quarantined}}, [192.0.2.1]:5 "
     "<a@b.example> -> <c@d.example>, quarantine: spam-x.gz, Queue-ID: 4F3A, Hits: 12.3, 1234 ms",
     {("filter_results", ("amavis", "spam", "blocked")): 1, ("quarantined", ("amavis",)): 1}),
    (f"{H} amavis[1]: (01234-02) Passed CLEAN {{RelayedInbound}}, [192.0.2.1]:5 <a@b> -> <c@d>, "
     "Hits: -1.0, size: 1234, 300 ms", {("filter_results", ("amavis", "clean", "passed")): 1}),
    (f"{H} amavis[1]: (01234-03) Blocked INFECTED (Eicar-Signature) {{DiscardedInbound,"
     "Quarantined}}, [192.0.2.1]:5 <a@b> -> <c@d>",
     {("filter_results", ("amavis", "infected", "blocked")): 1, ("quarantined", ("amavis",)): 1}),
    (f"{H} spamd[1]: spamd: identified spam (15.2/5.0) for nobody:65534 in 2.1 seconds, 1234 bytes.",
     {("filter_results", ("spamassassin", "spam", "checked")): 1}),
    (f"{H} spamd[1]: spamd: clean message (0.1/5.0) for nobody:65534 in 0.3 seconds, 999 bytes.",
     {("filter_results", ("spamassassin", "clean", "checked")): 1}),
    (f"{H} clamd[1]: instream(127.0.0.1@40000): Eicar-Signature FOUND",
     {("filter_results", ("clamav", "infected", "found")): 1}),
    (f"{H} clamav-milter[1]: Message 4F3A from <a@b> to <c@d> with subject 'x' message-id '<m>' "
     "date 'd' infected by Eicar-Test-Signature", {("filter_results", ("clamav", "infected", "found")): 1}),
]  # fmt: skip


def check(
    line: str,
    expected: Effects,
    log_format: str = "syslog",
    postfix_syslog_names: tuple[str, ...] = (),
) -> None:
    counters = run([line], log_format, postfix_syslog_names)
    assert effects(counters) == expected
    results = {key[2] for key, count in counters.lines.items() if count}
    assert results == {"parsed"}, line


@pytest.mark.parametrize(("line", "expected"), POSTFIX_CASES + DOVECOT_SYSLOG_CASES + FILTER_CASES)
def test_syslog_line(line: str, expected: Effects) -> None:
    check(line, expected)


@pytest.mark.parametrize(("line", "expected"), OWN_NAME_CASES)
def test_configured_postfix_syslog_names(line: str, expected: Effects) -> None:
    check(line, expected, postfix_syslog_names=OWN_NAMES)


@pytest.mark.parametrize(("line", "expected"), EXIM_CASES + EXIM_TLS_CASES)
def test_exim_mainlog_line(line: str, expected: Effects) -> None:
    check(line, expected, "exim")


@pytest.mark.parametrize(("line", "expected"), EXIM_CASES[:3] + EXIM_TLS_CASES[:1])
def test_exim_through_syslog(line: str, expected: Effects) -> None:
    check(f"{H} exim[99]: {line[20:]}", expected)


@pytest.mark.parametrize(("line", "expected"), DOVECOT_FILE_CASES)
def test_dovecot_log_file_line(line: str, expected: Effects) -> None:
    check(line, expected, "dovecot")


@pytest.mark.parametrize("count", ["\u00b2", "\uff13", "\u0663", "9" * 5000])
def test_attempt_counts_not_in_ascii_digits_count_one(count: str) -> None:
    """A recorded line with its count replaced: superscripts pass ``isdigit()`` and break
    ``int()``, other scripts' digits pass ``int()``, 5,000 digits are past its limit."""
    line = DOVECOT_FILE_CASES[1][0].replace("3 attempts", f"{count} attempts")
    check(line, {("auth_failures", (D, "imap")): 1, ("disconnects", (D, "imap", "auth_failed")): 1},
          "dovecot")  # fmt: skip


def test_rspamd_log_file_line() -> None:
    line = ("2024-01-12 10:00:00 #1234(normal) <abc123>; task; rspamd_task_write_log: id: <m@x>, "
            "(default: T (add header): [7.10/15.00] [X(1){}]), len: 10")  # fmt: skip
    check(line, {("filter_results", ("rspamd", "spam", "add_header")): 1}, "rspamd")


def test_unknown_programs_and_lines_are_unsupported() -> None:
    counters = run([
        f"{H} opendkim[1]: 4F3A: DKIM-Signature field added",
        f"{H} postfix/smtpd[1]: something postfix never said",
        "no syslog shape at all",
    ])  # fmt: skip
    assert effects(counters) == {}
    assert dict(counters.lines) == {
        ("other", "opendkim", "unsupported"): 1,
        ("postfix", "postfix/smtpd", "unsupported"): 1,
        ("other", "none", "unsupported"): 1,
    }


def test_qmgr_counts_a_message_once_across_retries() -> None:
    line = f"{H} postfix/qmgr[1]: 20AA12141C4: from=<a@b.example>, size=322, nrcpt=1 (queue active)"
    removed = f"{H} postfix/qmgr[1]: 20AA12141C4: removed"
    counters = run([line, line, line, removed, line])
    assert counters.received[("postfix",)] == 2  # the ID came back after it was removed


def test_delay_stages_land_in_their_buckets() -> None:
    counters = run([
        f"{H} postfix/smtp[1]: 1A: to=<a@b.c>, relay=r[1.2.3.4]:25, delay=3700, "
        "delays=0.004/3600/0.7/99, dsn=2.0.0, status=sent (250 ok)",
    ])  # fmt: skip
    histograms = {key[2]: h for key, h in counters.delays.items()}
    assert histograms["before_queue_manager"].buckets[0] == 1  # le 0.01
    assert histograms["queue_manager"].buckets[11] == 1  # le 3600
    assert histograms["connection_setup"].buckets[4] == 1  # le 1
    assert histograms["transmission"].buckets[9] == 1  # le 300
    assert histograms["transmission"].sum == 99


@pytest.mark.parametrize(
    ("fixture", "log_format", "lines"),
    [("postfix_real.log", "syslog", 71), ("postfix_expiry_table.log", "syslog", 38),
     ("exim_syslog.log", "syslog", 7), ("dovecot_real.log", "dovecot", 30), ("dovecot_pam.log", "dovecot", 24),
     ("exim_mainlog", "exim", 20), ("exim_rejectlog", "exim", 7), ("exim_tls_refusals", "exim", 20)],
)  # fmt: skip
def test_recorded_logs_are_understood_whole(fixture: str, log_format: str, lines: int) -> None:
    counters = run((FIXTURES / fixture).read_text().splitlines(), log_format)
    assert sum(counters.lines.values()) == lines
    assert not [key for key in counters.lines if key[2] == "unsupported"]


def test_postfix_recorded_log_submissions() -> None:
    """Four messages came in through smtpd; qmgr also queued the bounce Postfix made."""
    counters = run((FIXTURES / "postfix_real.log").read_text().splitlines())
    assert dict(counters.submitted) == {("postfix", "smtpd"): 3, ("postfix", "submission/smtpd"): 1}
    assert dict(counters.received) == {("postfix",): 5}


def test_force_expired_message_is_an_expiry_not_a_reception() -> None:
    """Recorded: one message deferred, force-expired with ``postsuper -e``, and its bounce."""
    counters = run((FIXTURES / "postfix_expiry_table.log").read_text().splitlines())
    assert dict(counters.received) == {("postfix",): 2}  # the message and its bounce
    assert counters.deliveries[("postfix", "qmgr", "expired")] == 1
    assert dict(counters.problem_classes) == {("postfix", "info", "table_changed"): 1}


def test_exim_through_syslog_with_its_own_timestamp() -> None:
    """Recorded: Exim 4.96 with ``log_file_path = syslog`` (tests/fixtures/logs/README.md)."""
    counters = run((FIXTURES / "exim_syslog.log").read_text().splitlines())
    assert counters.received[("exim",)] == 1
    assert dict(counters.submitted) == {("exim", "local"): 1}
    # main and reject log both went to syslog: one reject, two identical lines
    assert dict(counters.rejects) == {("exim", "smtp", "relay_denied"): 2}


def test_exim_mainlog_totals() -> None:
    counters = run((FIXTURES / "exim_mainlog").read_text().splitlines(), "exim")
    assert counters.received[("exim",)] == 2
    assert dict(counters.submitted) == {("exim", "esmtps"): 1}  # the other is a bounce
    assert dict(counters.deliveries) == {
        ("exim", "local_delivery", "sent"): 2,
        ("exim", "remote_smtp", "deferred"): 1,
        ("exim", "remote_smtp", "bounced"): 1,
        ("exim", "none", "bounced"): 1,
    }
    assert sum(counters.rejects.values()) == 5
    assert counters.frozen[("exim",)] == 1


def test_domains_are_capped_and_counters_never_fall() -> None:
    domains = TopDomains(keep=3)
    seen: dict[tuple[str, ...], int] = {}
    for index in range(20 * REBALANCE_EVERY):
        # three early domains, then a flood from one busy domain and many random ones
        domain = f"d{index % 3}.example" if index < REBALANCE_EVERY else (
            "busy.example" if index % 2 else f"random{index}.example")  # fmt: skip
        domains.add("postfix", domain)
        for key, value in domains.counts.items():
            assert value >= seen.get(key, 0)
            seen[key] = value
    labels = {key[1] for key in domains.counts}
    assert "busy.example" in labels
    assert len(labels - {"other"}) <= 3
    assert sum(domains.counts.values()) <= 20 * REBALANCE_EVERY


TIE = """
from mail_exporter.collectors.logs.domains import REBALANCE_EVERY, TopDomains
domains = TopDomains(keep=4)
for name in ("a.example", "b.example", "c.example", "d.example"):  # promoted, all as quiet
    domains.add("postfix", name)
for _ in range(REBALANCE_EVERY):  # busy enough to take the slot of one of them
    domains.add("postfix", "busy.example")
print(sorted(domains.snapshot().items()))
"""


def test_which_tied_domain_is_demoted_does_not_depend_on_the_hash_seed() -> None:
    """Four promoted domains tie at the quietest when a busy one comes: the one that gives
    its slot is the same in every process, whatever seed Python hashes strings with."""
    outputs = {
        subprocess.run(
            [sys.executable, "-c", TIE], env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout
        for seed in range(8)
    }  # fmt: skip
    assert len(outputs) == 1, outputs
    assert "busy.example" in outputs.pop()


def test_label_values_from_text_are_bounded() -> None:
    lines = [f"{H} postfix/custom{n}/smtpd[1]: connect from x[192.0.2.1]" for n in range(500)]
    counters = run(lines)
    assert len(counters.connections) <= 51
    assert counters.connections[("postfix", "other")] > 0


def test_exim_protocol_labels_are_bounded() -> None:
    lines = [f"2024-01-12 10:00:00 1rOHxx-000abc-Ab <= a@b.example H=h [192.0.2.1] P=proto{n} S=1"
             for n in range(500)]  # fmt: skip
    counters = run(lines, "exim")
    assert sum(counters.submitted.values()) == 500
    assert len(counters.submitted) <= 51
    assert counters.submitted[("exim", "other")] > 0


def test_other_syslog_names_are_postfix_only_when_configured() -> None:
    lines = [
        f"{H} submission/smtpd[1]: connect from unknown[192.0.2.1]",
        f"{H} submissions/smtpd[1]: connect from unknown[192.0.2.1]",  # not a "submission/" tag
        f"{H} mta-out[1]: connect from unknown[192.0.2.1]",  # no daemon after the name
    ]
    unconfigured = run(lines)
    assert effects(unconfigured) == {}
    assert dict(unconfigured.lines) == {
        ("other", "submission/smtpd", "unsupported"): 1,
        ("other", "submissions/smtpd", "unsupported"): 1,
        ("other", "mta-out", "unsupported"): 1,
    }
    configured = run(lines, postfix_syslog_names=OWN_NAMES)
    assert effects(configured) == {("connections", ("postfix", "submission/smtpd")): 1}
    assert dict(configured.lines) == {
        ("postfix", "submission/smtpd", "parsed"): 1,
        ("other", "submissions/smtpd", "unsupported"): 1,
        ("other", "mta-out", "unsupported"): 1,
    }


def test_configured_syslog_names_stay_bounded() -> None:
    lines = [f"{H} mta-out/custom{n}/smtpd[1]: connect from x[192.0.2.1]" for n in range(500)]
    counters = run(lines, postfix_syslog_names=OWN_NAMES)
    assert sum(counters.connections.values()) == 500
    assert len(counters.connections) <= 51
    assert counters.connections[("postfix", "other")] > 0


def test_exim_tls_labels_are_bounded() -> None:
    lines = [
        f"2024-01-12 10:00:00 1rOHxx-000abc-Ab <= a@b.example H=h [192.0.2.1] P=esmtps "
        f"X=TLS9.{n}:CIPHER:256 CV=maybe{n} S=1"
        for n in range(200)
    ]
    counters = run(lines, "exim")
    assert dict(counters.tls_connections) == {("exim", "smtp", "other", "anonymous"): 200}


EXIM_TLS_REFUSALS = (FIXTURES / "exim_tls_refusals").read_text().splitlines()
"""Our own Exim 4.96 refused after STARTTLS (tests/test_logs_exim_tls_real_server.py)."""
EXIM_TLS_SESSION = ("exim", "remote_smtp", "TLS 1.3", "verified")


def exim_recorded(message_id: str, flag: str = "") -> list[str]:
    """The recorded lines of one message, or of one of its delivery line kinds."""
    return [line for line in EXIM_TLS_REFUSALS if f" {message_id} {flag}" in line]


def test_exim_refused_delivery_over_tls_is_a_session() -> None:
    """A ``**`` with ``X=``: the receiver refused RCPT after STARTTLS."""
    (line,) = exim_recorded("1xaEw3-0005kK-1v", "**")
    counters = run([line], "exim")
    assert dict(counters.tls_connections) == {EXIM_TLS_SESSION: 1}
    assert dict(counters.refusal_codes) == {("exim", "5", "5.1.1"): 1}


@pytest.mark.parametrize(
    ("message_id", "lines"),
    [("1xaEw3-0005kM-1y", "<= ** ** Frozen"),  # two recipients refused at RCPT
     ("1xaEw3-0005kS-22", "<= ** Frozen"),  # refused after the data
     ("1xaEw3-0005kO-1z", "<= ** => == -> Frozen")],  # one refused, two delivered, one deferred
)  # fmt: skip
def test_exim_one_delivery_attempt_is_one_tls_session(message_id: str, lines: str) -> None:
    recorded = exim_recorded(message_id)
    assert [line.split(" ")[3] for line in recorded] == lines.split()
    assert dict(run(recorded, "exim").tls_connections) == {EXIM_TLS_SESSION: 1}


def test_exim_deferral_over_tls_shows_no_session() -> None:
    """Exim 4.96 writes no ``X=`` on ``==`` lines, though this one came over TLS."""
    (line,) = exim_recorded("1xaEw3-0005kQ-20")[1:]
    assert " X=" not in line
    assert dict(run([line], "exim").tls_connections) == {}


def test_exim_attempt_after_a_deferral_is_a_new_session() -> None:
    """The recorded attempt, then its deferred recipient delivered over the same host by a
    later queue run (the attempt's ``=>`` line again stands for that delivery)."""
    refused, delivered, deferred = (exim_recorded("1xaEw3-0005kO-1z", flag)[0]
                                    for flag in ("**", "=>", "=="))  # fmt: skip
    counters = run([refused, delivered, deferred, delivered], "exim")
    assert dict(counters.tls_connections) == {EXIM_TLS_SESSION: 2}


def test_exim_tls_refusals_recorded_totals() -> None:
    counters = run(EXIM_TLS_REFUSALS, "exim")
    assert dict(counters.tls_connections) == {EXIM_TLS_SESSION: 4}
    assert dict(counters.deliveries) == {
        ("exim", "remote_smtp", "bounced"): 5,
        ("exim", "remote_smtp", "sent"): 2,
        ("exim", "remote_smtp", "deferred"): 2,
    }
    assert dict(counters.refusal_codes) == {
        ("exim", "5", "5.1.1"): 4, ("exim", "5", "5.7.1"): 1, ("exim", "4", "4.7.1"): 2,
    }  # fmt: skip


def test_postfix_refusals_recorded_from_a_receiver_that_refuses_as_the_big_ones_do() -> None:
    """Our own Postfix 3.7.11 relaying to the scripted receiver of
    tests/test_logs_refusals.py (tests/fixtures/logs/README.md): every reply's class,
    enhanced code and reason, by receiving domain; qmgr's size= and nrcpt=."""
    from tests.test_logs_refusals import REFUSAL_CODES, REFUSALS_BY_DOMAIN

    counters = run((FIXTURES / "postfix_refusals.log").read_text().splitlines())
    assert counters.refusals.snapshot() == {(P, *key): n for key, n in REFUSALS_BY_DOMAIN.items()}
    assert dict(counters.refusal_codes) == {(P, *key): n for key, n in REFUSAL_CODES.items()}
    assert counters.message_recipients[(P,)].buckets[:3] == [1, 0, 1]  # nrcpt 1 and 3
    assert counters.message_sizes[(P,)].sum == 322 + 294
    assert set(counters.lines) == {(P, "postfix/qmgr", "parsed"), (P, "postfix/smtp", "parsed")}


E2 = "2026-05-14 17:49:33 1wN9t2-00000002BQv-3hr9"
EXIM_REFUSAL_CASES = [
    # The reply as a DirectAdmin user quoted it from Exim, for Microsoft's throttle
    # (https://forum.directadmin.com/threads/hotmail-ip-has-been-temporarily-rate-limited-due-to-ip-reputation-for-e-mail-delivery-information-see-https-aka-ms-postmaster-s775.82240/),
    # on the == line Exim writes for the deferral.
    (f"{E2} == a@hotmail.com R=dnslookup T=remote_smtp defer (-46) H=hotmail-com.olc."
     "protection.outlook.com [52.101.73.17]: SMTP error from remote mail server after "
     "pipelined MAIL FROM:<b@example.org> SIZE=4169: 451 4.7.650 The mail server [192.0.2.1] "
     "has been temporarily rate limited due to IP reputation. For e-mail delivery "
     "information, see https://aka.ms/postmaster (S775)",
     {("deliveries", ("exim", "remote_smtp", "deferred")): 1,
      ("recipient_domains", ("exim", "hotmail.com", "deferred")): 1,
      ("refusals", ("exim", "hotmail.com", "deferred", "rate_limited")): 1,
      ("refusal_codes", ("exim", "4", "other")): 1}),
    (f"{E2} ** nobody@remote.example R=dnslookup T=remote_smtp H=mx.remote.example "
     "[203.0.113.9]: SMTP error from remote mail server after RCPT TO:<nobody@remote.example>: "
     "550 5.1.1 User unknown",
     {("deliveries", ("exim", "remote_smtp", "bounced")): 1,
      ("recipient_domains", ("exim", "remote.example", "bounced")): 1,
      ("refusals", ("exim", "remote.example", "bounced", "unknown_user")): 1,
      ("refusal_codes", ("exim", "5", "5.1.1")): 1}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), EXIM_REFUSAL_CASES)
def test_exim_refusal(line: str, expected: Effects) -> None:
    check(line, expected, "exim")


def test_exim_message_shape_from_size_and_received_recipients() -> None:
    counters = run([
        f"{E2} <= a@b.example H=h [192.0.2.1] P=esmtp S=2048 id=x T=\"for you\" for c@d e@f",
        f"{E2} <= a@b.example H=h [192.0.2.1] P=esmtp S=512 T=\"no list: for x\"",
    ], "exim")  # fmt: skip
    assert counters.message_sizes[("exim",)].sum == 2048 + 512
    assert sum(counters.message_recipients[("exim",)].buckets) == 1
    assert counters.message_recipients[("exim",)].buckets[1] == 1  # 2 recipients


def test_configured_reply_reasons_come_before_the_defaults() -> None:
    from mail_exporter.collectors.logs.replies import ReplyReasons

    replies = ReplyReasons([("Greylisted", "rate_limited"), ("USER UNKNOWN", "policy")])
    assert replies.classify("451 4.7.1 greylisted, come back") == ("4", "4.7.1", "rate_limited")
    assert replies.classify("550 5.1.1 User unknown") == ("5", "5.1.1", "policy")
    assert ReplyReasons().classify("550 5.1.1 User unknown")[2] == "unknown_user"
    assert ReplyReasons().classify("550 5.7.99 whatever") == ("5", "other", "other")
    assert ReplyReasons().classify("554 5.7.12 no") == ("5", "5.7.12", "policy")


def test_reply_reasons_config_takes_plain_patterns_and_known_reasons_only() -> None:
    from pydantic import ValidationError

    from mail_exporter.collectors.logs.collector import LogsCollector
    from mail_exporter.collectors.logs.config import LogsConfig

    for bad in ({"pattern": "", "reason": "policy"}, {"pattern": "x", "reason": "spam"},
                {"pattern": "x" * 201, "reason": "policy"}):  # fmt: skip
        with pytest.raises(ValidationError):
            LogsConfig.model_validate({"sources": [], "reply_reasons": [bad]})
    settings = LogsConfig.model_validate(
        {"sources": [], "reply_reasons": [{"pattern": "(.*a){20}", "reason": "policy"}]}
    )
    collector = LogsCollector(settings)
    try:
        dispatcher = collector.dispatcher
        assert dispatcher.postfix.replies is dispatcher.exim.replies
        assert dispatcher.exim.replies.classify("550 5.1.1 (.*A){20}")[2] == "policy"
        assert dispatcher.exim.replies.classify("550 5.1.1 " + "a" * 30)[2] == "unknown_user"
    finally:
        collector.close()
