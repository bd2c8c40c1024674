"""qmail, known by its queue directory (``/var/qmail/queue``): qmail has no tool that
prints its settings, and its log goes wherever its supervisor sends it (multilog, or
syslog through splogger), so only the queue is discovered."""

from __future__ import annotations

from mail_exporter.discovery.facts import ServerFacts
from mail_exporter.discovery.options import DiscoveryOptions


def discover_qmail(options: DiscoveryOptions) -> tuple[list[ServerFacts], list[str]]:
    home = options.path("/var/qmail")
    queue = home / "queue"
    if not queue.is_dir():
        return [], []
    facts = ServerFacts(kind="qmail", name="qmail", summary=f"qmail: queue {queue}")
    facts.queue = queue
    facts.paths = [queue]
    facts.uses_syslog = True
    facts.settings = {
        "name": "qmail",
        "queue_directory": str(queue),
        "qstat_command": [str(home / "bin" / "qmail-qstat")],
        "qread_command": [str(home / "bin" / "qmail-qread")],
    }
    return [facts], []
