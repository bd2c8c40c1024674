"""The ``showq`` source: Postfix's own listing service on ``public/showq``.

``postqueue -p`` reads it so; the postdrop group may connect. Postfix's showq process
pays about half a CPU-second per 10,000 messages.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.postfix_queue.snapshot import MAX_FIELD_BYTES, Listing, QueueSnapshot
from mail_exporter.decimal_text import ascii_int


def _showq_fields(connection: socket.socket) -> Iterator[bytes]:
    """The NUL-terminated strings of a showq stream, read in bounded chunks."""
    buffer = b""
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            if buffer:
                raise CollectorError("showq stream ended in the middle of a record")
            return
        buffer += chunk
        *complete, buffer = buffer.split(b"\0")
        if len(buffer) > MAX_FIELD_BYTES:
            raise CollectorError("showq sent a field longer than 64 KiB")
        yield from complete


def parse_showq(fields: Iterable[bytes], snapshot: QueueSnapshot) -> None:
    """Fold showq's attribute stream (name, value, …, empty name ends a record) into a snapshot."""
    iterator = iter(fields)
    message = Listing()
    for raw_name in iterator:
        if raw_name == b"":
            if message.queue:
                message.add_to(snapshot)
            message = Listing()
            continue
        name = raw_name.decode(errors="replace")
        value = next(iterator, b"").decode(errors="replace")
        if name == "queue_name":
            message.queue = value
        elif name == "size" and (size := ascii_int(value)) is not None:
            message.size = size
        elif name == "time" and (seconds := ascii_int(value)) is not None:
            message.arrival = float(seconds)
        elif name == "recipient":
            message.recipients.append((value, ""))
        elif name == "reason" and message.recipients:
            message.recipients[-1] = (message.recipients[-1][0], value)


def read_showq(queue_directory: Path, timeout: float) -> QueueSnapshot:
    snapshot = QueueSnapshot("showq")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(str(queue_directory / "public" / "showq"))
        parse_showq(_showq_fields(connection), snapshot)
    return snapshot
