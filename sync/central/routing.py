"""Which agency holds a request, and by when it should be done: the district's rules, as plain data.

A rule names a service, a category (the value of the form's first choice
question) and a village pattern (`fnmatch`, compared casefolded), each `*`
for any, and the agency that acts on a request matching all three; the first
rule that matches wins, and none matching gives the default agency. A target
names a service and a category (`*` for any) and the hours a request may
take from its arrival; the first that matches sets the deadline, and none
matching sets none. The config holds both as lists of mappings; `rules()`
and `targets()` check them and say what is wrong in one line.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from typing import Any, NamedTuple

ANY = "*"
DEFAULT_AGENCY = "Kantor Desa"
MAX_HOURS = 24 * 365 * 5


class Rule(NamedTuple):
    """Requests of `service` and `category` from a village matching `village` go to `agency`."""

    service: str
    category: str
    village: str
    agency: str

    def matches(self, service: str, category: str | None, village: str) -> bool:
        return (self.service in (ANY, service) and self.category in (ANY, category)
                and fnmatch.fnmatchcase(" ".join(village.casefold().split()), self.village.casefold()))


class Target(NamedTuple):
    """Requests of `service` and `category` should be done within `hours` of their arrival."""

    service: str
    category: str
    hours: int

    def matches(self, service: str, category: str | None) -> bool:
        return self.service in (ANY, service) and self.category in (ANY, category)


class Routing(NamedTuple):
    """The rules, the default agency and the targets a central store assigns each new request by."""

    rules: tuple[Rule, ...] = ()
    default_agency: str = DEFAULT_AGENCY
    targets: tuple[Target, ...] = ()

    def agency(self, service: str, category: str | None, village: str) -> str:
        """The agency of the first rule that matches; the default agency when none does."""
        return next((rule.agency for rule in self.rules if rule.matches(service, category, village)),
                    self.default_agency)

    def due(self, service: str, category: str | None, received: dt.datetime) -> dt.datetime | None:
        """When a request received at `received` should be done; None when no target matches."""
        hours = next((target.hours for target in self.targets if target.matches(service, category)), None)
        return None if hours is None else received + dt.timedelta(hours=hours)


def rules(value: Any) -> tuple[Rule, ...]:
    """Routing rules from config: a list of {service, category, village, agency}; ValueError says what is wrong."""
    checked = []
    for number, entry in enumerate(_entries(value, "{service: report, category: road, village: '*', "
                                                   "agency: Dinas PU}"), 1):
        fields = _fields(entry, number, {"service", "category", "village", "agency"}, required={"agency"})
        checked.append(Rule(fields.get("service", ANY), fields.get("category", ANY), fields.get("village", ANY),
                            fields["agency"]))
    return tuple(checked)


def targets(value: Any) -> tuple[Target, ...]:
    """Deadline targets from config: a list of {service, category, hours}; ValueError says what is wrong."""
    checked = []
    for number, entry in enumerate(_entries(value, "{service: report, category: road, hours: 168}"), 1):
        fields = _fields(entry, number, {"service", "category"}, required={"service"}, numbers=frozenset({"hours"}))
        checked.append(Target(fields["service"], fields.get("category", ANY), fields["hours"]))
    return tuple(checked)


def _entries(value: Any, example: str) -> list:
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not all(isinstance(entry, (dict, Rule, Target)) for entry in value):
        raise ValueError(f"expected a list of mappings, like [{example}]")
    return [entry._asdict() if isinstance(entry, tuple) else entry for entry in value]


def _fields(entry: dict, number: int, names: set[str], required: set[str], numbers: frozenset = frozenset()) -> dict:
    """The checked fields of the `number`th entry: text `names`, whole-hour `numbers`, `required` present."""
    unknown = sorted(set(entry) - names - set(numbers), key=str)
    if unknown:
        known = ", ".join(sorted(names | set(numbers)))
        raise ValueError(f"entry {number}: unknown key {unknown[0]!r} (known: {known})")
    missing = sorted((required | set(numbers)) - set(entry))
    if missing:
        raise ValueError(f"entry {number}: {missing[0]} is missing")
    fields = {}
    for name, value in entry.items():
        if name in numbers:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_HOURS:
                raise ValueError(f"entry {number}: {name} must be a whole number of hours from 1 to {MAX_HOURS}")
        elif not isinstance(value, str) or not value.strip():
            raise ValueError(f"entry {number}: {name} must be non-empty text")
        else:
            value = value.strip()
        fields[name] = value
    return fields
