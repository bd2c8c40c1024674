"""End-to-end round trips: send a tagged message by SMTP, find it by IMAP or POP3, clean up.

One file per concern: :mod:`.message` (the tagged message, hop delays), :mod:`.send`
(SMTP submission), :mod:`.imap_mailbox` and :mod:`.pop3_mailbox` (finding and deleting
our messages, behind :mod:`.mailbox`'s interface), :mod:`.connection` (TCP, TLS and time
limits they share), :mod:`.outcome` (stages, outcomes, totals) and :mod:`.runner` (the
schedule and the bookkeeping of messages on their way).
"""
