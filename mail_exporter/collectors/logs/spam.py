"""Content filters: rspamd, amavis (with SpamAssassin inside), spamd and ClamAV verdicts.

Each verdict counts in ``mail_content_filter_results_total{mta, verdict, action}``
with ``mta`` the filter's name (rspamd, amavis, spamassassin, clamav):

* rspamd's task line ``(default: T (reject): [16.20/15.00] [...])``: verdict ``spam``
  (T) or ``clean`` (F), action as rspamd names it (``no_action``, ``greylist``,
  ``add_header``, ``rewrite_subject``, ``soft_reject``, ``reject``). rspamd's other lines
  (workers, maps, lua) say nothing about mail and count as parsed.
* amavis ``Passed CLEAN``, ``Blocked SPAM``, ``Blocked INFECTED (Eicar)``, ...: verdict
  from the category, action ``passed`` or ``blocked``; ``Quarantined`` in its flags (or a
  ``quarantine:`` field) counts in ``mail_quarantined_total``.
* spamd ``identified spam`` / ``clean message``: action ``checked`` (spamd only scores).
* clamd ``FOUND`` and clamav-milter ``infected by``: verdict ``infected``, action ``found``.

Rejects these filters cause through a milter show in the MTA's own reject counters.
"""

from __future__ import annotations

from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.labels import OTHER

RSPAMD_ACTIONS = frozenset(("no_action", "greylist", "add_header", "rewrite_subject",
                            "soft_reject", "reject", "discard", "quarantine"))  # fmt: skip
AMAVIS_VERDICTS = {"CLEAN": "clean", "SPAM": "spam", "SPAMMY": "spammy",
                   "INFECTED": "infected", "BANNED": "banned", "BAD-HEADER": "bad_header",
                   "UNCHECKED": "unchecked", "OVERSIZED": "oversized",
                   "MTA-BLOCKED": "mta_blocked"}  # fmt: skip
AMAVIS_NOISE = ("(!", "extra modules", "starting", "Net::Server", "SpamControl", "Found ",
                "No ext", "Module ", "Using primary", "Using secondary", "TIMING",
                "Deleting", "Hits")  # fmt: skip


class SpamParser:
    def __init__(self, counters: LogCounters) -> None:
        self.c = counters

    def result(self, filter_name: str, verdict: str, action: str) -> bool:
        self.c.filter_results[(filter_name, verdict, action)] += 1
        return True

    def rspamd(self, service: str, text: str) -> bool:
        start = text.find("(default: ")
        if start < 0:
            return True  # not a task line: nothing about mail
        flag = text[start + 10 : start + 11]
        action = text[start + 13 : text.find("): ", start)].replace(" ", "_")
        verdict = "spam" if flag == "T" else "clean"
        return self.result("rspamd", verdict, action if action in RSPAMD_ACTIONS else OTHER)

    def rspamd_line(self, line: str) -> bool:
        return self.rspamd("rspamd", line)

    def amavis(self, service: str, text: str) -> bool:
        """``(01234-01) Passed CLEAN {RelayedInbound}, [1.2.3.4]:5 <a@b> -> <c@d>, ...``."""
        start = text.find(") ") + 2 if text.startswith("(") else 0
        action, _, rest = text[start:].partition(" ")
        if action not in ("Passed", "Blocked"):
            return text.startswith(AMAVIS_NOISE, start)
        category = rest[: rest.find(" ")] if " " in rest else rest
        if "Quarantined" in rest[: rest.find("}") + 1] or ", quarantine: " in rest:
            self.c.quarantined[("amavis",)] += 1
        verdict = AMAVIS_VERDICTS.get(category.rstrip(","), OTHER)
        return self.result("amavis", verdict, action.lower())

    def spamd(self, service: str, text: str) -> bool:
        if "identified spam" in text:
            return self.result("spamassassin", "spam", "checked")
        if "clean message" in text:
            return self.result("spamassassin", "clean", "checked")
        return "spamd:" in text or text.startswith(("prefork:", "child", "connection from"))

    def clamav(self, service: str, text: str) -> bool:
        if text.endswith(" FOUND") or " infected by " in text:
            return self.result("clamav", "infected", "found")
        return text.endswith((": OK", "SelfCheck: Database status OK.")) or "clamd" in text
