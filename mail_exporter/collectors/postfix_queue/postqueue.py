"""The ``postqueue`` source: ``postqueue -j``, the last resort.

It asks showq too, through one more process.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.commands import run_command
from mail_exporter.collectors.postfix_queue.snapshot import Listing, QueueSnapshot


def parse_postqueue_json(lines: Iterable[str], snapshot: QueueSnapshot) -> None:
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        message = Listing(
            queue=str(record.get("queue_name", "")),
            size=int(record.get("message_size", 0)),
            arrival=float(record["arrival_time"]) if "arrival_time" in record else None,
            recipients=[
                (str(r.get("address", "")), str(r.get("delay_reason", "")))
                for r in record.get("recipients", [])
            ],
        )
        message.add_to(snapshot)


def run_postqueue(command: str, config_directory: Path, timeout: float) -> QueueSnapshot:
    snapshot = QueueSnapshot("postqueue")
    output = run_command([command, "-c", str(config_directory), "-j"], timeout)
    try:
        parse_postqueue_json(output.splitlines(), snapshot)
    except (ValueError, TypeError) as error:
        raise CollectorError(f"{command} -j printed something else than JSON: {error}") from None
    return snapshot
