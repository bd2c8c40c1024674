"""The report payloads of a message: its parts, decompressed with byte caps."""

from __future__ import annotations
