"""Reading config files and the files they name, bounded in time and memory.

The config, the web config and the secrets, certificates and CA bundles they name are
read on start and on every reload, from whatever an administrator's path leads to.
Nothing there may hang a reload (it holds the reload lock, so every later reload
would wait too) or exhaust memory:

- A file is opened with ``O_NONBLOCK`` and must be a regular file, checked with
  ``fstat`` on the open descriptor (what is checked is what is read): a FIFO, a
  device (``/dev/zero``), a directory or a socket is refused at once, and so is a
  config given as ``<(command)``. At most ``limit`` bytes are read; one more is read
  to tell a larger file, since a size from ``stat`` is not to be trusted (files in
  ``/proc`` say 0).
- YAML is composed with two limits. Depth (100 levels): PyYAML's composer recurses
  once per level, so 5,000 nested brackets would end in RecursionError. Nodes
  (100,000), counted as if every alias were a copy of what it names: the data is
  walked that way afterwards (line index, validation), so a "billion laughs" of a
  few hundred bytes is refused at its 100,000th node instead of expanding there.
  An alias inside the node it names (``a: &a [*a]``) is a cycle and refused.
  Anchors, aliases and merge keys (``<<: *defaults``) otherwise work as usual.
- What YAML can write but no config can use is an error at its place too: a lone
  surrogate (from a ``\\udc80`` escape; it cannot be encoded, so every page showing
  it would fail) and a value its constructor refuses (an integer beyond Python's
  4,300 digits, a timestamp in month 13).

Errors carry the key path and line, so they are listed like any other config problem.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor

MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""Config and web config files, certificates and CA bundles (Debian's is 0.2 MiB)."""
MAX_SECRET_BYTES = 64 * 1024
"""Password files."""
MAX_YAML_DEPTH = 100
MAX_YAML_NODES = 100_000

Location = tuple[str | int, ...]

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_SURROGATE = re.compile("[\ud800-\udfff]")


class UnreadableFile(ValueError):
    """Why a file cannot be used (without its path: the caller names it)."""


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit >> 10} KiB"


def read_bounded(path: Path, limit: int) -> bytes:
    """The content of the regular file ``path``, at most ``limit`` bytes; never blocks."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise UnreadableFile(error.strerror or str(error)) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
            raise UnreadableFile(f"not a regular file ({kind})")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(descriptor, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise UnreadableFile(error.strerror or str(error)) from None
    finally:
        os.close(descriptor)
    if size > limit:
        raise UnreadableFile(f"larger than {_size(limit)}")
    return b"".join(chunks)


class YAMLRefused(Exception):
    """A YAML document refused at ``location`` (line ``line``) for ``message``."""

    def __init__(self, location: Location, line: int, message: str) -> None:
        super().__init__(message)
        self.location = location
        self.line = line
        self.message = message


class _BoundedComposer(yaml.SafeLoader):
    """PyYAML's safe composer, counting depth and expanded nodes as it goes."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._path: list[str | int] = []
        self._depth = 0
        self._expanded = 0  # nodes so far, each alias counted as a copy of its node
        # (expanded nodes, height) of every finished node, by id: all stay alive meanwhile.
        self._extent: dict[int, tuple[int, int]] = {}

    def _refuse(self, at: yaml.Event | yaml.Node, message: str) -> YAMLRefused:
        mark = at.start_mark  # always set by the pure-Python parser
        return YAMLRefused(tuple(self._path), mark.line + 1 if mark else 0, message)

    def _count(self, nodes: int, at: yaml.Event) -> None:
        self._expanded += nodes
        if self._expanded > MAX_YAML_NODES:
            raise self._refuse(at, f"more than {MAX_YAML_NODES} values (aliases counted as copies)")

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # ``index`` is a sequence position, a mapping key's node for its value, or
        # None for the root and for keys themselves (the stubs say int only).
        part = _key_part(index) if isinstance(index, yaml.Node) else index
        if part is not None:
            self._path.append(part)
        try:
            return self._compose(parent, index)
        finally:
            if part is not None:
                self._path.pop()

    def _compose(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # stubs lack it
        if isinstance(event, yaml.AliasEvent):
            self._count_alias(event)
            return super().compose_node(parent, index)
        if self._depth >= MAX_YAML_DEPTH:
            raise self._refuse(event, f"nested deeper than {MAX_YAML_DEPTH} levels")
        self._count(1, event)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        assert node is not None
        self._extent[id(node)] = self._extent_of(node)
        return node

    def _count_alias(self, event: yaml.AliasEvent) -> None:
        named = self.anchors.get(event.anchor)
        if named is None:
            return  # the composer's own error: undefined alias
        extent = self._extent.get(id(named))
        alias = f"alias *{event.anchor}"
        if extent is None:
            raise self._refuse(event, f"{alias} is inside the node it names: a cycle")
        if self._depth + extent[1] > MAX_YAML_DEPTH:
            raise self._refuse(event, f"{alias} nests values deeper than {MAX_YAML_DEPTH} levels")
        self._count(extent[0], event)

    def _extent_of(self, node: yaml.Node) -> tuple[int, int]:
        if isinstance(node, yaml.ScalarNode):
            if _SURROGATE.search(node.value):
                raise self._refuse(
                    node,
                    "lone surrogate (a \\uD800-\\uDFFF escape) is not a character: "
                    "write the character itself or a \\U escape",
                )
            return 1, 1
        children: list[yaml.Node] = (
            [item for pair in node.value for item in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        extents = [self._extent[id(child)] for child in children]
        return 1 + sum(e[0] for e in extents), 1 + max((e[1] for e in extents), default=0)


def compose_yaml(text: str) -> yaml.Node | None:
    """The node graph of a one-document YAML text (None when empty), within the limits.

    Raises ``yaml.YAMLError`` for invalid YAML and :class:`YAMLRefused` past a limit."""
    composer = _BoundedComposer(text)
    try:
        return composer.get_single_node()
    finally:
        composer.dispose()


class _Constructor(SafeConstructor):
    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as error:
            kind = str(node.tag).rsplit(":", 1)[-1]
            reason = str(error).split(";", 1)[0]  # not Python's advice to raise its limits
            raise _ValueRefused(node, f"not a valid {kind}: {reason}") from None


class _ValueRefused(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.node = node


def construct_yaml(root: yaml.Node) -> object:
    """The Python data of a node graph from :func:`compose_yaml` (safe tags only).

    Merge keys are resolved in the graph itself, so index its lines before. Raises
    ``yaml.YAMLError`` for what the constructors refuse with their own errors and
    :class:`YAMLRefused` for a value they cannot build."""
    try:
        return _Constructor().construct_document(root)
    except _ValueRefused as refused:
        location = _location_of(root, refused.node)
        raise YAMLRefused(location, refused.node.start_mark.line + 1, str(refused)) from None


def _key_part(key: yaml.Node) -> str:
    """A mapping key as a location part; "?" for a key that is a list or a mapping."""
    return str(key.value) if isinstance(key, yaml.ScalarNode) else "?"


def _location_of(root: yaml.Node, wanted: yaml.Node) -> Location:
    """Where ``wanted`` first appears under ``root`` (bounded: the graph was composed)."""
    pending: list[tuple[yaml.Node, Location]] = [(root, ())]
    while pending:
        node, location = pending.pop()
        if node is wanted:
            return location
        children: list[tuple[yaml.Node, Location]] = []
        if isinstance(node, yaml.SequenceNode):
            children = [(item, (*location, i)) for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                children += [(key, location), (value, (*location, _key_part(key)))]
        pending.extend(reversed(children))
    return ()
