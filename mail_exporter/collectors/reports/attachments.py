"""The report payloads of a message: which parts hold reports, and their documents,
decompressed with byte caps.

A part is a report candidate by its content type (the ones RFC 7489 and RFC 8460 name,
and those reporters use: ``application/gzip``, ``application/zip``, ``text/xml``,
``application/tlsrpt+gzip``, …) or its file name's ending (``.xml``, ``.xml.gz``,
``.zip``, ``.json``, ``.json.gz``, ``.gz``). What it holds is told by its bytes, not its
labels (reporters mislabel: ``application/octet-stream`` for a ``.xml.gz``): a gzip or
zip signature is unpacked, anything else is the document itself. The labels only hint
the kind (DMARC or TLS-RPT) for a refusal before the document can be read; a document's
first character (``<`` or ``{``) tells it after.

Everything here is bounded before it costs memory:

- gzip is inflated by one ``zlib.decompressobj`` with ``max_length`` (never
  ``gzip.decompress``, whose output is unbounded): past the cap the work stops, so a
  10 GB bomb costs the cap, not 10 GB. Concatenated members are read as gzip reads them.
- a zip's central directory is checked before :mod:`zipfile` reads it (its member count
  in the end record, its size, no ZIP64: zipfile would otherwise build an object for each
  of up to 200,000 entries of a 10 MiB message); members are read with ``read(cap + 1)``
  (zipfile inflates with ``max_length`` too); encrypted members, methods other than
  stored and deflate, and too many members are refused.
- a document that is itself an archive (gzip in zip, zip in gzip, gzip in gzip) is
  refused, so layered bombs end at the first layer's cap.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from mail_exporter.collectors.reports.rejection import Rejected

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
# The kind each report content type hints; "message": a report of either kind.
CONTENT_TYPES = {
    "application/gzip": "message",
    "application/x-gzip": "message",
    "application/zip": "message",
    "application/x-zip-compressed": "message",
    "application/xml": "dmarc",
    "text/xml": "dmarc",
    "application/tlsrpt+gzip": "tlsrpt",
    "application/tlsrpt+json": "tlsrpt",
    "application/json": "tlsrpt",
}
# File name endings, the more telling first.
SUFFIXES = (
    (".xml.gz", "dmarc"),
    (".xml", "dmarc"),
    (".json.gz", "tlsrpt"),
    (".json", "tlsrpt"),
    (".zip", "message"),
    (".gz", "message"),
)
# End of central directory record: signature, disk numbers, entries on this disk and in
# all, directory size and offset, comment length.
END_RECORD = struct.Struct("<4s4H2LH")
END_SIGNATURE = b"PK\x05\x06"
ZIP64_LOCATOR = b"PK\x06\x07"
ZIP64_LOCATOR_SIZE = 20
# A directory entry is 46 bytes plus its name and extra fields: 8 members with long
# names fit many times over.
MAX_DIRECTORY_BYTES = 64 * 1024


def report_hint(content_type: str, filename: str | None) -> str | None:
    """The kind a part with ``content_type`` and ``filename`` may hold ("dmarc",
    "tlsrpt" or "message" for either), or None when it is no report."""
    name = (filename or "").lower()
    for suffix, kind in SUFFIXES:
        if name.endswith(suffix):
            return kind
    return CONTENT_TYPES.get(content_type.lower())


def is_archive(data: bytes) -> bool:
    return data.startswith(GZIP_MAGIC) or data.startswith(ZIP_MAGICS)


def unpack(blob: bytes, kind: str, cap: int, max_members: int) -> list[bytes]:
    """The documents in ``blob``: itself, the gzip's content, or the zip's members;
    none larger than ``cap`` bytes, none an archive again. Raises :class:`Rejected` of
    ``kind``."""
    if blob.startswith(GZIP_MAGIC):
        documents = [gunzip(blob, kind, cap)]
    elif blob.startswith(ZIP_MAGICS):
        documents = unzip(blob, kind, cap, max_members)
    else:
        if len(blob) > cap:
            raise Rejected(kind, "attachment_too_large", f"{len(blob)} bytes")
        return [blob]
    for document in documents:
        if is_archive(document):
            raise Rejected(kind, "archive", "an archive inside an archive")
    return documents


def gunzip(data: bytes, kind: str, cap: int) -> bytes:
    """The content of the gzip ``data`` (one member or several), at most ``cap`` bytes."""
    pieces: list[bytes] = []
    size = 0
    rest = data
    try:
        while True:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending = rest
            while pending and not inflater.eof:
                piece = inflater.decompress(pending, cap + 1 - size)
                size += len(piece)
                if size > cap:
                    raise Rejected(kind, "attachment_too_large", f"over {cap} bytes inflated")
                pieces.append(piece)
                pending = inflater.unconsumed_tail
            if not inflater.eof:
                raise Rejected(kind, "compression", "gzip data ends early")
            rest = inflater.unused_data
            if not rest.strip(b"\0"):  # gzip tolerates zero padding after the last member
                return b"".join(pieces)
            if not rest.startswith(GZIP_MAGIC):
                raise Rejected(kind, "compression", "data after the gzip stream")
    except zlib.error as error:
        raise Rejected(kind, "compression", str(error)) from None


def check_directory(data: bytes, kind: str, max_members: int) -> None:
    """Refuse a zip whose end record (found as zipfile finds it: the last signature in the
    last 64 KiB) announces too many members, a large directory or ZIP64."""
    at = data.rfind(END_SIGNATURE, max(0, len(data) - END_RECORD.size - 0xFFFF))
    if at < 0 or len(data) - at < END_RECORD.size:
        raise Rejected(kind, "archive", "no zip end record")
    *_, members, directory_size, _, _ = END_RECORD.unpack_from(data, at)
    locator = data[max(0, at - ZIP64_LOCATOR_SIZE) : at]
    if locator.startswith(ZIP64_LOCATOR) or members == 0xFFFF or directory_size == 0xFFFFFFFF:
        raise Rejected(kind, "archive", "ZIP64")
    if members > max_members:
        raise Rejected(kind, "archive", f"{members} members, more than {max_members}")
    if directory_size > MAX_DIRECTORY_BYTES:
        raise Rejected(kind, "archive", f"a {directory_size} bytes directory")


def unzip(data: bytes, kind: str, cap: int, max_members: int) -> list[bytes]:
    """The members of the zip ``data`` (directories left out), each at most ``cap``
    bytes and all together too."""
    check_directory(data, kind, max_members)
    documents: list[bytes] = []
    size = 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
            if len(entries) > max_members:
                raise Rejected(kind, "archive", f"{len(entries)} members, more than {max_members}")
            for entry in entries:
                if entry.is_dir():
                    continue
                if entry.flag_bits & 0x1:
                    raise Rejected(kind, "archive", "encrypted")
                if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise Rejected(kind, "archive", f"compression method {entry.compress_type}")
                if entry.file_size > cap - size:
                    raise Rejected(kind, "attachment_too_large", f"{entry.file_size} bytes")
                with archive.open(entry) as member:
                    document = member.read(cap - size + 1)
                size += len(document)
                if size > cap:
                    raise Rejected(kind, "attachment_too_large", f"over {cap} bytes inflated")
                documents.append(document)
    except (zipfile.BadZipFile, NotImplementedError, EOFError, OSError, ValueError) as error:
        raise Rejected(kind, "archive", str(error)) from None
    except zlib.error as error:
        raise Rejected(kind, "compression", str(error)) from None
    if not documents:
        raise Rejected(kind, "archive", "no member")
    return documents
