"""The runbook as a web page, for ``/runbook``: where the shipped alerts' ``runbook_url``
points by default (``mixin/config.py``), so that a link in Alertmanager, a chat message or
Grafana opens on the alert's section from anywhere that reaches the exporter.

The text is ``docs/runbook.md``, shipped in the package (``runbook.md`` is a link to it in
the source tree, a copy in wheels), so it always matches the rules of this version. It is
rendered once, by a small renderer of the Markdown the runbook uses rather than a
dependency: headings get the anchors GitHub gives them (``## MailProbeDown`` is
``#mailprobedown``, the alert's name in lower case), fenced code stays preformatted, and
the rest keeps its line breaks and indentation (lists, steps) with inline code, bold and
links marked up. Everything is HTML-escaped before it is marked up.

Sample: ``GET /runbook#mailqueuedeferredhigh`` opens the MailQueueDeferredHigh section.
"""

from __future__ import annotations

import functools
import html
import re
from importlib.resources import files

_HEADING = re.compile(r"(#{1,6}) (.+)")
_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)")

_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;line-height:1.4}"
    "pre{background:#f4f4f4;padding:.6em;overflow-x:auto}"
    "code{background:#f4f4f4;padding:0 .2em}"
    "div{white-space:pre-wrap;margin:.6em 0}"
)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, spaces as hyphens, other punctuation gone."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def _inline(text: str) -> str:
    """One escaped block with inline code, bold and links marked up; only links within
    the page (``#...``) and to http(s) pages are made links."""

    def mark(match: re.Match[str]) -> str:
        code, bold, label, target = match.groups()
        if code is not None:
            return f"<code>{code}</code>"
        if bold is not None:
            return f"<b>{bold}</b>"
        if target.startswith(("#", "http://", "https://")):
            return f'<a href="{target}">{label}</a>'
        return label

    return _INLINE.sub(mark, html.escape(text))


def render(markdown: str) -> str:
    """The runbook's Markdown as a whole HTML page."""
    parts: list[str] = []
    block: list[str] = []
    fence: list[str] | None = None

    def flush() -> None:
        if block:
            parts.append(f"<div>{_inline(chr(10).join(block))}</div>")
            block.clear()

    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            if fence is None:
                flush()
                fence = []
            else:
                parts.append(f"<pre>{html.escape(chr(10).join(fence))}</pre>")
                fence = None
        elif fence is not None:
            fence.append(line)
        elif heading := _HEADING.fullmatch(line):
            flush()
            level, text = len(heading[1]), heading[2]
            parts.append(f'<h{level} id="{anchor(text)}">{_inline(text)}</h{level}>')
        elif line.strip():
            block.append(line)
        else:
            flush()
    flush()
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>mail_exporter runbook</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


@functools.cache
def runbook_page() -> str:
    """The shipped runbook, rendered once."""
    return render(files("mail_exporter").joinpath("runbook.md").read_text(encoding="utf-8"))
