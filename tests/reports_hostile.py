"""Hostile report messages, built and read in a child process that measures itself.

``python -m tests.reports_hostile CASE`` builds the message of CASE, drops what building
it cost (``/proc/self/clear_refs`` resets the peak RSS), reads it with
:func:`read_message` and prints, as JSON, the refusals' kinds and reasons, the seconds
it took and the process's peak RSS while reading (VmHWM), so that
tests/test_reports_parsing.py can bound the time and memory a hostile message costs.
"""

from __future__ import annotations

import gc
import io
import json
import struct
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from mail_exporter.collectors.reports.limits import Limits
from mail_exporter.collectors.reports.message import MAX_LINES, read_message

MIB = 1024 * 1024
GIB = 1024 * MIB


def message(*attachments: tuple[bytes, str, str]) -> bytes:
    """A report message with ``attachments`` (content, content type, file name)."""
    mail = EmailMessage()
    mail["From"] = "noreply-dmarc@receiver.example"
    mail["To"] = "dmarc@example.com"
    mail["Subject"] = "Report domain: example.com"
    mail.set_content("A report is attached.\n")
    for content, content_type, name in attachments:
        maintype, subtype = content_type.split("/")
        mail.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return mail.as_bytes()


def deflated_zeros(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes (a multiple of 1 MiB), built without
    compressing them all: after a full flush the compressor starts afresh, so every
    further MiB compresses to the same bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * (size // MIB) + compressor.flush()


def gzip_of_zeros(size: int) -> bytes:
    """A gzip member of ``size`` zero bytes (the CRC is that of the first MiB only: a
    reader that checks it has inflated everything, which is the attack)."""
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<2L", zlib.crc32(bytes(MIB)), size & 0xFFFFFFFF)
    return header + deflated_zeros(size) + trailer


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


def zip_with_raw_member(name: str, deflated: bytes, declared_size: int) -> bytes:
    """A zip of one deflate member whose header declares ``declared_size`` bytes."""
    encoded = name.encode()
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(deflated), declared_size, len(encoded), 0
    )
    central = struct.pack(
        "<4s6H3L5H2L",
        b"PK\x01\x02",
        20,
        20,
        0,
        8,
        0,
        0,
        0,
        len(deflated),
        declared_size,
        len(encoded),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    body = local + encoded + deflated
    directory = central + encoded
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(body), 0)
    return body + directory + end


def zip_bomb() -> bytes:
    """One member of 4,000 MiB of zeros (its header says so) in 4 MB."""
    member = zip_with_raw_member("report.xml", deflated_zeros(4000 * MIB), 4000 * MIB)
    return message((member, "application/zip", "report.zip"))


def zip_bomb_lying() -> bytes:
    """The same member with a header that says 1,000 bytes: read it and see."""
    member = zip_with_raw_member("report.xml", deflated_zeros(4000 * MIB), 1000)
    return message((member, "application/zip", "report.zip"))


def zip_bomb_layers() -> bytes:
    """10 GiB of zeros in layers: a zip of 8 zips of 1.25 GiB each, as 42.zip does."""
    inner = zip_with_raw_member("report.xml", deflated_zeros(1280 * MIB), 1280 * MIB)
    outer = zip_of([(f"layer{n}.zip", inner) for n in range(8)])
    return message((outer, "application/zip", "report.zip"))


def gzip_bomb() -> bytes:
    """1 GiB of zeros in 1 MB of gzip."""
    return message((gzip_of_zeros(GIB), "application/gzip", "report.xml.gz"))


def gzip_bomb_layers() -> bytes:
    """10 GiB of zeros as gzip, gzipped again (some 30 KB)."""
    outer = zlib.compress(gzip_of_zeros(10 * GIB), 9, wbits=16 + zlib.MAX_WBITS)
    return message((outer, "application/gzip", "report.xml.gz"))


def billion_laughs() -> bytes:
    entities = "".join(f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10))
    document = (
        f'<?xml version="1.0"?><!DOCTYPE feedback [<!ENTITY lol0 "lol">{entities}]>'
        "<feedback><report_metadata><org_name>&lol9;</org_name></report_metadata></feedback>"
    )
    return message((document.encode(), "application/xml", "report.xml"))


def external_entity() -> bytes:
    document = (
        '<?xml version="1.0"?><!DOCTYPE feedback [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<feedback><report_metadata><org_name>&x;</org_name></report_metadata></feedback>"
    )
    return message((document.encode(), "application/xml", "report.xml"))


def huge_message() -> bytes:
    """A message with a 100 MB attachment, written as base64 lines."""
    head = message((b"", "application/gzip", "report.xml.gz"))
    return head + (b"A" * 76 + b"\r\n") * (100 * 1000 * 1000 // 78)


def invalid_xml() -> bytes:
    return message((b"<feedback><report_metadata><org_name>x</org", "text/xml", "r.xml"))


def invalid_json() -> bytes:
    return message(
        (b'{"organization-name": "x", "policies": [', "application/tlsrpt+json", "r.json")
    )


def too_many_records() -> bytes:
    record = (
        "<record><row><source_ip>192.0.2.1</source_ip><count>1</count><policy_evaluated>"
        "<disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated>"
        "</row></record>"
    )
    document = (
        "<feedback><report_metadata><org_name>r</org_name><report_id>1</report_id><date_range>"
        "<begin>0</begin><end>1</end></date_range></report_metadata><policy_published><domain>"
        f"example.com</domain></policy_published>{record * (Limits().max_records + 1)}</feedback>"
    )
    packed = zlib.compress(document.encode(), 9, wbits=16 + zlib.MAX_WBITS)
    return message((packed, "application/gzip", "report.xml.gz"))


def too_many_members() -> bytes:
    members = [(f"report{n}.xml", b"<feedback/>") for n in range(Limits().max_zip_members + 1)]
    return message((zip_of(members), "application/zip", "report.zip"))


def deep_xml() -> bytes:
    """Elements nested 2 million deep, in 20 KB of gzip."""
    document = b"<feedback>" + b"<a>" * 2_000_000
    packed = zlib.compress(document, 9, wbits=16 + zlib.MAX_WBITS)
    return message((packed, "application/gzip", "report.xml.gz"))


def wide_xml() -> bytes:
    """4 million empty elements in one record."""
    document = b"<feedback><record>" + b"<a/>" * 4_000_000 + b"</record></feedback>"
    packed = zlib.compress(document, 9, wbits=16 + zlib.MAX_WBITS)
    return message((packed, "application/gzip", "report.xml.gz"))


def attribute_xml() -> bytes:
    """One start tag of 1.5 million attributes (16 MB)."""
    attributes = b"".join(b" a%d=''" % n for n in range(1_500_000))
    document = b"<feedback" + attributes + b"/>"
    packed = zlib.compress(document, 9, wbits=16 + zlib.MAX_WBITS)
    return message((packed, "application/gzip", "report.xml.gz"))


def many_names() -> bytes:
    """2 million elements, each of a name of its own."""
    names = b"".join(b"<a%d/>" % n for n in range(2_000_000))
    packed = zlib.compress(b"<feedback>" + names + b"</feedback>", 9, wbits=16 + zlib.MAX_WBITS)
    return message((packed, "application/gzip", "report.xml.gz"))


def json_objects() -> bytes:
    """A TLS-RPT report of 6 million empty objects (18 MB; loaded, some 400 MB)."""
    document = b'{"policies": [' + b"{}," * 6_000_000 + b"{}]}"
    packed = zlib.compress(document, 9, wbits=16 + zlib.MAX_WBITS)
    return message((packed, "application/tlsrpt+gzip", "report.json.gz"))


def deep_mime() -> bytes:
    """Multiparts nested 5,000 deep."""
    depth = 5000
    head = b"".join(
        b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (n, n + 1)
        for n in range(depth)
    )
    return b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n' + head + b"x\r\n"


def too_many_lines() -> bytes:
    """10 MiB of 3-byte lines."""
    return b"Subject: lines\r\n\r\n" + b"x\r\n" * (Limits().max_message_bytes // 3 - 100)


def long_header() -> bytes:
    """A Subject of 9 million escape characters."""
    return b"From: a@example.com\r\nSubject: " + b"\x1b" * 9_000_000 + b"\r\n\r\nbody\r\n"


def deep_rfc822() -> bytes:
    """Messages attached to messages, 5,000 deep."""
    return b"Content-Type: message/rfc822\r\n\r\n" * 5000 + b"x\r\n"


def many_lines_nested() -> bytes:
    """Short lines in multiparts nested 8 deep: the most lines at the most depth that
    read_message accepts, so the slowest message to parse."""
    head = b"".join(
        b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (n, n + 1)
        for n in range(7)
    )
    body = b"x\r\n" * (MAX_LINES - 100)
    return b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n' + head + body


CASES: dict[str, Callable[[], bytes]] = {
    case.__name__: case
    for case in (
        zip_bomb,
        zip_bomb_lying,
        zip_bomb_layers,
        gzip_bomb,
        gzip_bomb_layers,
        billion_laughs,
        external_entity,
        huge_message,
        invalid_xml,
        invalid_json,
        too_many_records,
        too_many_members,
        deep_xml,
        wide_xml,
        attribute_xml,
        many_names,
        json_objects,
        deep_mime,
        deep_rfc822,
        many_lines_nested,
        too_many_lines,
        long_header,
    )
}


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(case: str) -> None:
    raw = CASES[case]()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    started = time.perf_counter()
    contents = read_message(raw, Limits())
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rejected": [[r.kind, r.reason] for r in contents.rejected],
                "reports": len(contents.dmarc) + len(contents.tlsrpt),
                "seconds": seconds,
                "message_bytes": len(raw),
                "peak_rss_bytes": peak_rss_bytes(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
