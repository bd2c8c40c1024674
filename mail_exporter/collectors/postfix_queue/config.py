"""The ``postfix_queue`` section: which instances, through which source.

:mod:`.collector` registers it with the collector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from mail_exporter.config.collectors import CollectorSection
from mail_exporter.config.fields import StrictModel


class PostfixInstance(StrictModel):
    """One Postfix instance; ``name`` is its ``mta_instance`` label (as in ``postfix-NAME``)."""

    name: str = Field(default="postfix", pattern=r"^[A-Za-z0-9_.-]+$")
    config_directory: Path = Path("/etc/postfix")
    queue_directory: Path | None = None  # default: what postconf says for config_directory


def _distinct_instance_names(instances: list[PostfixInstance]) -> list[PostfixInstance]:
    """Each name once: two instances of one name would export the same series twice.

    The error is raised at the second instance's ``name`` (present or defaulted), so that
    check-config points at the instance to rename rather than at the whole list.
    """
    seen: set[str] = set()
    problems: list[InitErrorDetails] = []
    for index, instance in enumerate(instances):
        if instance.name in seen:
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError(
                        "duplicate_name",
                        "duplicate instance name {name}",
                        {"name": repr(instance.name)},
                    ),
                    loc=(index, "name"),
                    input=instance.name,
                )
            )
        seen.add(instance.name)
    if problems:
        raise ValidationError.from_exception_data("instances", problems)
    return instances


class PostfixQueueConfig(CollectorSection):
    instances: Annotated[list[PostfixInstance], AfterValidator(_distinct_instance_names)] = Field(
        default_factory=lambda: [PostfixInstance()]
    )
    source: Literal["auto", "spool", "showq", "postqueue"] = "auto"
    postconf_command: str = "postconf"
    postqueue_command: str = "postqueue"
    top_domains: int = Field(default=10, ge=1, le=100)
