"""Log-derived metrics: follow Postfix, Exim, Dovecot and content filter logs and count.

One file per concern:

* :mod:`.lines` bytes to lines (partial and overlong lines), :mod:`.follower` the
  follower thread and standard input, :mod:`.files` files through rotation,
  :mod:`.containers` the log files of containers, :mod:`.envelopes` their runtimes'
  records,
  :mod:`.journal` the systemd journal, :mod:`.state` the state file;
* :mod:`.dispatch` routes a line by program, :mod:`.postfix`, :mod:`.exim`,
  :mod:`.dovecot` and :mod:`.spam` understand them, :mod:`.rejects` classifies rejects
  and :mod:`.replies` the replies of servers that refused our mail;
* :mod:`.counters` and :mod:`.domains` hold the counts, :mod:`.render` turns them into
  metric families, :mod:`.collector` ties it together and registers ``logs`` with its
  section, :mod:`.config`.
"""

from mail_exporter.collectors.logs import collector  # noqa: F401  (registers "logs")
