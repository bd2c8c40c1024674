"""Gzip bodies put together from parts compressed once, so that a scrape does not compress
again what has not changed.

A part is compressed on its own as raw deflate (level 1, as /metrics always was) and ended
with a sync flush: its last block is not final and it ends on a byte boundary, and no
back-reference leaves it. Parts compressed by separate compressors therefore follow one
another as one valid deflate stream; an empty final block (``03 00``) ends it, and the
gzip header and trailer around it make one ordinary gzip member, which every client
decodes (Go's gzip reader as Prometheus uses it, curl, Python's gzip and zlib).

The trailer holds the CRC-32 of the whole text. Each part keeps its own CRC and length,
and the whole one is combined from those without reading the text again: zlib's
``crc32_combine``, which Python's zlib module does not expose, is called in the zlib that
Python's links (``libz.so.1``) through ctypes, at under 1 µs a part. Where that library
cannot be loaded the same combination is computed in Python (:func:`_combine_in_python`,
zlib's own algorithm): the same bytes, some 60 µs a part.

Each part pays a 4-5 byte flush marker and starts with an empty dictionary: for parts of
a few kilobytes and more, as the scheduler's and the collectors' are, the body is a few
percent larger than one stream's.
"""

from __future__ import annotations

import ctypes
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

LEVEL = 1
"""Level 1 shrinks the text format about 16-fold in a third of level 6's time."""
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"
"""Deflate, no name or time, fastest compression (XFL 4), Unix: what zlib writes at level 1."""
FINAL_BLOCK = b"\x03\x00"
"""An empty fixed-Huffman block with BFINAL set: the end of the deflate stream."""
_POLYNOMIAL = 0xEDB88320


@dataclass(frozen=True, slots=True)
class Part:
    """A text compressed as raw deflate ending in a sync flush, with its CRC-32 and length."""

    deflate: bytes
    crc: int
    length: int


def compress(text: bytes) -> Part:
    """``text`` as a part of a gzip body."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflate = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return Part(deflate, zlib.crc32(text), len(text))


def gzip_member(
    parts: Iterable[Part], combine: Callable[[int, int, int], int] | None = None
) -> bytes:
    """One gzip member holding the parts' texts one after the other; ``combine`` is the CRC
    combination to use (zlib's, or the one in Python where zlib's cannot be loaded)."""
    combine = combine or crc32_combine
    pieces = [HEADER]
    crc = length = 0
    for part in parts:
        if part.length:
            pieces.append(part.deflate)
            crc = combine(crc, part.crc, part.length)
            length += part.length
    pieces += [FINAL_BLOCK, struct.pack("<II", crc, length & 0xFFFFFFFF)]
    return b"".join(pieces)


def _multiply(a: int, b: int) -> int:
    """a times b modulo the CRC-32 polynomial (reflected), as zlib's ``multmodp``."""
    product, bit = 0, 1 << 31
    while True:
        if a & bit:
            product ^= b
            if not a & (bit - 1):
                return product
        bit >>= 1
        b = (b >> 1) ^ _POLYNOMIAL if b & 1 else b >> 1


def _powers() -> list[int]:
    """x to the 2^n-th power modulo the polynomial, n from 0 to 31 (zlib's ``x2n_table``)."""
    powers = [1 << 30]
    for _ in range(31):
        powers.append(_multiply(powers[-1], powers[-1]))
    return powers


_POWERS = _powers()


def _combine_in_python(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of A + B from A's, B's and B's length (zlib's ``crc32_combine``)."""
    shift, k, n = 1 << 31, 3, length2  # x^(8 * length2): 2^3 bits a byte
    while n:
        if n & 1:
            shift = _multiply(_POWERS[k & 31], shift)
        n >>= 1
        k += 1
    return _multiply(shift, crc1) ^ crc2


def _zlib_combine() -> Callable[[int, int, int], int] | None:
    """zlib's own ``crc32_combine``, or None where its library cannot be loaded."""
    try:
        library = ctypes.CDLL("libz.so.1")
    except OSError:
        return None
    combine = library.crc32_combine
    combine.restype = ctypes.c_ulong
    combine.argtypes = [ctypes.c_ulong, ctypes.c_ulong, ctypes.c_long]
    return combine


crc32_combine: Callable[[int, int, int], int] = _zlib_combine() or _combine_in_python
