"""YAML into a model, with every problem at once: key path, line and a plain message.

:func:`validate_yaml` composes the YAML within the limits of
:mod:`mail_exporter.config.files`, indexes the line of every key and list item (and
duplicate keys, which PyYAML would silently overwrite), validates the data into a
pydantic model and adds the checks that span sections. It either returns the model or
raises :class:`ConfigError` listing every problem as ``key.path (line N): message``:
nothing half-valid ever reaches the scheduler. The config and the web config both go
through here, so their errors read the same.

An unknown key close to one the mapping takes (a typo) is told the key it resembles
(:func:`suggestion`): the keys are read from the model along the key's path, with the
model a value chooses for itself (a module's protocol, :meth:`ModuleConfig.model_for`)
where it has a ``model_for`` class method.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from mail_exporter.config.files import (
    MAX_CONFIG_BYTES,
    Location,
    UnreadableFile,
    YAMLRefused,
    compose_yaml,
    construct_yaml,
    read_bounded,
)


class ConfigError(Exception):
    """A configuration that cannot be used, with every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def __str__(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s)"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


class LineIndex:
    """Line numbers of every key and list item in a YAML document, and duplicate keys."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.lines: dict[Location, int] = {}
        self.duplicates: list[tuple[Location, int]] = []
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, location: Location) -> None:
        self.lines.setdefault(location, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = (*location, key)
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                seen.add(key)
                self.lines[child] = key_node.start_mark.line + 1
                self._walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*location, index))

    def line_of(self, location: Location) -> int | None:
        for end in range(len(location), -1, -1):
            if location[:end] in self.lines:
                return self.lines[location[:end]]
        return None


INLINE_SECRETS: Final[Mapping[str, str]] = {
    "password": "passwords never go in the config; use password_file or password_env",
    "client_secret": "secrets never go in the config; use client_secret_file or client_secret_env",
    "refresh_token": "secrets never go in the config; use refresh_token_file",
    "private_key": "keys never go in the config; use private_key_file",
    "access_token": "tokens never go in the config; use token_file or token_command",
}
"""What an unknown key that would hold a secret is told (its value is never shown)."""


def describe_error(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        inline = INLINE_SECRETS.get(str(error["loc"][-1]))
        return f"unknown key: {inline}" if inline else "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _model_in(annotation: Any, value: Any) -> type[BaseModel] | None:
    """The model a field's ``annotation`` validates a mapping ``value`` into, through
    ``Annotated``, optional and union types; ``None`` when it takes no mapping of keys."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _model_in(get_args(annotation)[0], value)
    if origin is Union or origin is types.UnionType:
        models = (_model_in(arg, value) for arg in get_args(annotation))
        return next((model for model in models if model is not None), None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        chooser = getattr(annotation, "model_for", None)
        return chooser(value) if chooser is not None else annotation
    return None


def _keys_at(model: type[BaseModel], data: Any, location: Location) -> list[str]:
    """The keys the mapping at ``location`` in ``data`` takes, by ``model``; [] if unknown."""
    annotation: Any = model
    value = data
    for part in location:
        origin = get_origin(annotation)
        if origin in (list, dict):
            annotation = get_args(annotation)[-1]
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                value = None
            continue
        current = _model_in(annotation, value)
        if current is None or not isinstance(value, dict):
            return []
        field = next((f for name, f in current.model_fields.items()
                      if part in (name, f.alias)), None)  # fmt: skip
        if field is None:
            return []
        annotation, value = field.annotation, value.get(part)
    current = _model_in(annotation, value)
    if current is None:
        return []
    return [field.alias or name for name, field in current.model_fields.items()]


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The one of ``choices`` that ``word`` was probably meant to be (a typo of it)."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` after a message about ``word``, or nothing."""
    meant = closest(word, choices)
    return f" (did you mean {meant}?)" if meant is not None else ""


def suggestion(model: type[BaseModel], data: Any, location: Location) -> str:
    """:func:`did_you_mean` for the unknown last key of ``location``: nothing for a key
    whose message already says what to write (an inline secret), nor for one that is
    right in another member of a union (a Graph leg's key in an SMTP leg)."""
    key = location[-1]
    if not isinstance(key, str) or key in INLINE_SECRETS:
        return ""
    known = _keys_at(model, data, location[:-1])
    return "" if key in known else did_you_mean(key, known)


def dotted(location: Location) -> str:
    parts: list[str] = []
    for part in location:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:  # a key that would not print is shown escaped, as Python writes it
            parts.append(f".{part}" if part.isprintable() else f".{part!r}")
    return "".join(parts).lstrip(".") or "(top level)"


ModelT = TypeVar("ModelT", bound=BaseModel)
Describe = Callable[[Mapping[str, Any]], str]
CrossCheck = Callable[[Mapping[str, Any]], Iterable[tuple[Location, str]]]


def validate_yaml(
    text: str,
    source: str,
    model: type[ModelT],
    *,
    describe: Describe = describe_error,
    cross_check: CrossCheck | None = None,
    context: dict[str, Any] | None = None,
) -> ModelT:
    """Validate YAML text into ``model``; raise :class:`ConfigError` with every problem.

    Each problem names its key path and line; ``cross_check`` adds checks that span
    sections, run on the raw data so they are reported alongside the others.
    """
    try:
        root = compose_yaml(text)
        index = LineIndex(root)  # first: constructing resolves merge keys in the graph itself
        data = construct_yaml(root) if root is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(source, [f"invalid YAML{where}: {problem}"]) from None
    except YAMLRefused as refused:
        # A path as deep as the limit says little beyond its start; the line says where.
        shown = dotted(refused.location[:8]) + ("..." if len(refused.location) > 8 else "")
        raise ConfigError(source, [f"{shown} (line {refused.line}): {refused.message}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level) (line 1): the file must be a mapping of keys"])
    problems = [f"{dotted(loc)} (line {line}): duplicate key" for loc, line in index.duplicates]
    validated: ModelT | None = None
    try:
        validated = model.model_validate(data, context=context)
    except ValidationError as error:
        for item in error.errors():
            location = tuple(item["loc"])
            problem = describe(item)
            if item["type"] == "extra_forbidden":
                problem += suggestion(model, data, location)
            problems.append(f"{dotted(location)} (line {index.line_of(location)}): {problem}")
    for location, message in cross_check(data) if cross_check else ():
        problems.append(f"{dotted(location)} (line {index.line_of(location)}): {message}")
    if problems or validated is None:
        raise ConfigError(source, problems)
    return validated


def load_yaml_file(path: Path, parse: Callable[[str, str, Path], ModelT]) -> ModelT:
    """Read a YAML file and ``parse(text, source, directory)`` it; an unreadable file is a
    :class:`ConfigError` like any other problem (see :mod:`mail_exporter.config.files`)."""
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES).decode("utf-8")
    except (UnreadableFile, UnicodeDecodeError) as error:
        raise ConfigError(str(path), [f"cannot read file: {error}"]) from None
    return parse(text, str(path), path.parent)
