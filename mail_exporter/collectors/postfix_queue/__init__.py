"""Postfix queues (maildrop, incoming, active, deferred, hold): size, bytes, age and why mail waits.

Three sources, chosen per instance by :mod:`.collector` unless the config
(:mod:`.config`) names one: :mod:`.spool` reads the queue directories, :mod:`.showq`
asks Postfix's listing service, :mod:`.postqueue` runs ``postqueue -j``. Each fills a
:class:`~.snapshot.QueueSnapshot`; :mod:`.reasons` classifies the delay reasons and
takes the recipient domains.

Sample output::

    mail_queue_messages{mta="postfix",mta_instance="postfix",queue="deferred"} 3.0
    mail_queue_deferred_recipients{mta="postfix",mta_instance="postfix",reason="timed_out"} 6.0
    mail_queue_deferred_domain_recipients{mta="postfix",mta_instance="postfix",domain="a.net"} 3.0
    mail_queue_source_info{mta="postfix",mta_instance="postfix",source="spool"} 1.0
    mail_queue_collect_success{mta="postfix",mta_instance="postfix"} 1.0
"""

from mail_exporter.collectors.postfix_queue import collector  # noqa: F401  (registers itself)
