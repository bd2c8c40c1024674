"""End-to-end round trips: send a tagged message by SMTP or Microsoft Graph, find it by IMAP,
POP3 or Graph, clean up.

One file per concern: :mod:`.message` (the tagged message, hop delays), :mod:`.send`
(SMTP submission), :mod:`.imap_mailbox` and :mod:`.pop3_mailbox` (finding and deleting
our messages, behind :mod:`.mailbox`'s interface), :mod:`.graph` (both legs over
Microsoft Graph's REST API), :mod:`.connection` (TCP, TLS and time
limits they share), :mod:`.outcome` (stages, outcomes, totals) and :mod:`.runner` (the
schedule and the bookkeeping of messages on their way).
"""
