"""Field types every config section uses: strict models, durations, addresses, names, paths.

Each type validates and says what is wrong in the words check-config prints; a section
only names the type. Paths are taken as written in the config file: relative ones from
that file's directory (the validation context's ``directory``), as Prometheus does.
Files a field names are read as :mod:`mail_exporter.config.files` reads them, within
bounds, so a FIFO or a device is refused at once rather than waited on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
)

from mail_exporter.config.files import (
    MAX_CONFIG_BYTES,
    MAX_SECRET_BYTES,
    UnreadableFile,
    read_bounded,
)
from mail_exporter.durations import format_duration, parse_duration
from mail_exporter.targets import parse_address


class StrictModel(BaseModel):
    """Unknown keys are errors everywhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: object) -> float:
    if not isinstance(value, str):
        raise ValueError(
            f"invalid duration {value!r}: use a number and a unit such as 500ms, 30s, 5m"
        )
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    return seconds


def _address(value: str) -> str:
    parse_address(value)
    return value


# Shown (the /config page) in the form it is written: 30s, not 30.0.
Duration = Annotated[
    Any, AfterValidator(_duration), PlainSerializer(format_duration, when_used="json")
]
AddressText = Annotated[str, AfterValidator(_address)]
"""``HOST:PORT``, as :func:`mail_exporter.targets.parse_address` reads it."""


def in_config_directory(path: Path, info: ValidationInfo) -> Path:
    """Relative paths are read from the config file's directory, as Prometheus does."""
    directory = (info.context or {}).get("directory")
    return directory / path if directory is not None and not path.is_absolute() else path


ConfigPath = Annotated[Path, AfterValidator(in_config_directory)]
"""A path in a config file: absolute, or relative to that file's directory."""


def read_named_file(key: str, path: Path, limit: int) -> bytes:
    """The content of the file ``key`` names, or a ValueError saying which and why not."""
    try:
        return read_bounded(path, limit)
    except UnreadableFile as error:
        raise ValueError(f"{key} {str(path)!r} cannot be read: {error}") from None


def secret_from_file(key: str, path: Path) -> str:
    """The secret in the file ``key`` names: its UTF-8 text without the final line break."""
    content = read_named_file(key, path, MAX_SECRET_BYTES)
    try:
        return content.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError(f"{key} {str(path)!r} is not UTF-8 text") from None


def secret_from_environment(variable: str) -> str:
    """The secret in the environment variable ``variable``."""
    if variable not in os.environ:
        raise ValueError(f"environment variable {variable} is not set")
    secret = os.environ[variable]
    try:  # undecodable bytes are kept as lone surrogates, which cannot be sent
        secret.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"environment variable {variable} is not UTF-8 text") from None
    return secret


def _ca_bundle(path: Path) -> Path:
    read_named_file("CA file", path, MAX_CONFIG_BYTES)
    return path


CAFile = Annotated[Path, AfterValidator(_ca_bundle)]


MAX_NAME_LENGTH = 128


def _printable_name(value: str) -> str:
    """A name that becomes a label value or a URL parameter, and is shown on every page."""
    if not 0 < len(value) <= MAX_NAME_LENGTH:
        raise ValueError(f"a name must have 1 to {MAX_NAME_LENGTH} characters")
    if not value.isprintable():
        raise ValueError(f"name {value!r} must be printable (no control characters)")
    return value


Name = Annotated[str, AfterValidator(_printable_name)]

LABEL_CHARACTERS = "A-Za-z0-9_.:-"
"""What a name that becomes a label value is made of: the characters a URL keeps as they are."""
LabelName = Annotated[
    str, Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=rf"^[{LABEL_CHARACTERS}]+$")
]
"""The name of a target or a route: its label value, in the characters a URL keeps as they are."""
OptionalLabelName = Annotated[
    str, Field(max_length=MAX_NAME_LENGTH, pattern=rf"^[{LABEL_CHARACTERS}]*$")
]
"""A label value as :data:`LabelName`, or empty: the value of a label left unset (the
running config, shown at /config, writes it so and must read back)."""
