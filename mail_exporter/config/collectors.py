"""The ``collectors`` section: one section per registered collector, named as the collector.

Each collector defines its section's model beside its code, as a :class:`CollectorSection`
(``enabled`` and a per-scrape ``timeout``, the rest its own), and registers it with
itself (:func:`mail_exporter.collectors.base.register_collector`). The model of the
whole section, :class:`CollectorSections` with a field for each, is built from those
registrations (:func:`collectors_model`), so that a section and its collector cannot
drift apart: a key under ``collectors:`` that no collector registered is an unknown key,
reported with its line. Sections are defaults all through: an empty ``collectors:`` is
valid and enables nothing.

This module knows nothing of the collectors themselves (they import it): the config
package hands it the registrations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field, create_model

from mail_exporter.config.fields import Duration, StrictModel

if TYPE_CHECKING:
    from mail_exporter.config.probes import ModuleConfig


class CollectorSection(StrictModel):
    """What every collector section has: a switch and a time limit per scrape."""

    enabled: bool = False
    timeout: Duration = Field(default="10s", validate_default=True)

    def resolve_modules(self, modules: Mapping[str, ModuleConfig]) -> None:
        """Given the config's modules once the whole config is valid: a section that names
        one (the reports mailbox's login) keeps it, so that it reaches the collector's
        factory and a changed module changes the section. Most sections name none."""


class CollectorSections(StrictModel):
    """The ``collectors`` section: a field per collector, each its own section model."""

    def section(self, name: str) -> CollectorSection:
        """The section of the collector ``name``; defaults for a name without one."""
        section = getattr(self, name, None)
        return section if isinstance(section, CollectorSection) else CollectorSection()


def collectors_model(sections: Mapping[str, type[CollectorSection]]) -> type[CollectorSections]:
    """The model of the ``collectors`` section: a field ``NAME`` for each collector's section
    model, in the order given, each defaulting to its model's defaults."""
    fields: dict[str, Any] = {name: (model, model()) for name, model in sections.items()}
    return create_model(
        "CollectorsConfig",
        __base__=CollectorSections,
        __doc__="One section per collector, named as the collector (and its "
        "--collector.NAME flag).",
        __module__=__name__,
        **fields,
    )
