"""The one handle filter: every list of handles a query string selects reads its parameters here, and
gets its queryset here: the admin's handle list, /browse/ and its CSV export, the bulk jobs that act on
"every handle the list shows", and the API's list.

Selections are exact. A parameter that names nothing we know (an unknown prefix or collection id, a
bogus status, sync state, health outcome or sort order, a malformed date, a parameter we do not have)
is refused with InvalidFilter, which gives the reason and a code per parameter; it is never ignored,
since ignoring it would show, export or change a wider set of handles than was asked for. A value that
is valid but matches no handle selects none.

Each surface speaks a vocabulary (a HandleFilterSet): the desk's (ids of prefixes and collections, as
the admin's list filters and /browse/ links use them) and the API's (prefix names, any well-formed
source system, changed_since). The filters themselves, their checks and their querysets are defined
once, below.

Not django-filter: its FilterSets derive filters from model fields and validate through a form, but
most of ours are computed (sync state, latest health check, a collection's rule, the indexed search),
an unknown parameter must be refused rather than ignored, the checks must query only what was given
(a million handles: no loading every choice to validate one), and the admin's list filters must reuse
them one at a time. What would remain of django-filter is its form plumbing, at the price of a
dependency.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from django import forms
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet

from handles.desk.models import Collection
from handles.desk.selectors import SyncState, filter_sync_state
from handles.keyset import Keyset
from handles.models import Handle, Prefix
from handles.selectors import handle_search, source_systems
from handles.validators import validate_prefix

MAX_SEARCH = 500
MAX_NAME = 64  # characters of a prefix or a source system, as the models keep them
SOURCE_SYSTEM_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
ROW_ID = re.compile(r"^[0-9]{1,18}$")  # ASCII digits only: int() also reads other scripts' digits


class Problem(NamedTuple):
    code: str  # the API's error codes: unknown_field, blank, invalid_choice, unknown_prefix ...
    message: str


class InvalidFilter(ValueError):
    """Parameters that cannot select exactly what they ask for, each with its reason and code."""

    def __init__(self, problems: Mapping[str, Problem]) -> None:
        self.details = dict(problems)
        self.problems = {name: problem.message for name, problem in self.details.items()}
        super().__init__(" ".join(self.problems.values()))

    def api_fields(self) -> dict[str, list[dict[str, str]]]:
        """The refusal as the API's `fields` of an error: {parameter: [{"code", "message"}]}."""
        return {name: [{"code": p.code, "message": p.message}] for name, p in self.details.items()}

    def summary(self) -> str:
        """One line naming each parameter: the API error's message."""
        return "; ".join(f"{name}: {message}" for name, message in self.problems.items())

    @property
    def code(self) -> str:
        """The first problem's code: the API error's own code."""
        return next(iter(self.details.values())).code


class Refused(Exception):
    """Raised by a filter's clean(): why its value is refused."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(code, message)


# --- The filters ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filter:
    """One parameter: how its text is checked (clean), what it selects (apply), how a page names it."""

    name: str
    label: str
    clean: Callable[[str], Any]  # the value the other two take; raises Refused
    apply: Callable[[QuerySet, Any], QuerySet] | None = None  # None: read by the caller (sort)
    describe: Callable[[Any], str] = str
    choices: Callable[[], list[tuple[str, str]]] | None = None  # what a menu of this filter offers
    strip: bool = True  # False: the value is matched exactly as given (an asset's id)


def _one_of(kind: str, choices: Callable[[], list[tuple[str, str]]]) -> Callable[[str], str]:
    def clean(value: str) -> str:
        known = [key for key, _ in choices()]
        if value not in known:
            raise Refused("invalid_choice", f"Unknown {kind} {value!r} (one of {', '.join(known)}).")
        return value
    return clean


def _search(value: str) -> str:
    if len(value) > MAX_SEARCH:
        raise Refused("max_length", f"The search is longer than {MAX_SEARCH} characters.")
    return value


def _by_id(model: type[Model], noun: str, code: str) -> Callable[[str], Model]:
    def clean(value: str) -> Model:
        found = model._default_manager.filter(pk=int(value)).first() if ROW_ID.match(value) else None
        if found is None:
            raise Refused(code, f"There is no {noun} with id {value!r}.")
        return found
    return clean


def _prefix_by_name(value: str) -> Prefix:
    if len(value) > MAX_NAME:
        raise Refused("max_length", f"A prefix is at most {MAX_NAME} characters.")
    try:
        validate_prefix(value)
    except ValidationError as exc:
        raise Refused(exc.code or "invalid", " ".join(exc.messages)) from None
    prefix = Prefix.objects.filter(prefix__iexact=value).first()
    if prefix is None:
        raise Refused("unknown_prefix", f"No prefix {value} is configured here.")
    return prefix


def _known_source(value: str) -> str:
    if value not in source_systems():
        raise Refused("unknown_source", f"No asset comes from the source system {value!r}.")
    return value


def _source_name(value: str) -> str:
    """Any well-formed source system (the API: a DAMS may ask before its first asset exists)."""
    if len(value) > MAX_NAME:
        raise Refused("max_length", f"A source system is at most {MAX_NAME} characters.")
    try:
        forms.RegexField(SOURCE_SYSTEM_PATTERN, max_length=64).clean(value)
    except ValidationError:
        raise Refused("invalid_source_system", "Lower-case letters, digits, '.', '_' and '-' (at most 64).") from None
    return value


def _external_id(value: str) -> str:
    if len(value) > 255:
        raise Refused("max_length", "An external id is at most 255 characters.")
    return value


def _moment(value: str) -> datetime:
    try:
        return forms.DateTimeField().clean(value)
    except ValidationError as exc:
        raise Refused("invalid", " ".join(exc.messages)) from None


def health_choices() -> list[tuple[str, str]]:
    """The outcomes a handle's latest resolution check can have, and "never checked"."""
    if not apps.is_installed("handles.repair"):
        return []
    from handles.repair.models import HealthOutcome

    return [*HealthOutcome.choices, ("never", "Never checked")]


def _last_health(queryset: QuerySet, outcome: str) -> QuerySet:
    from handles.repair.selectors import handles_by_last_outcome

    return handles_by_last_outcome(queryset, outcome)


# The browse page's sort orders: each a keyset (the last field unique, so paging is exact).
SORTS = {
    "handle": ("Handle A–Z", ["prefix_id", "suffix_key"]),
    "-handle": ("Handle Z–A", ["-prefix_id", "-suffix_key"]),
    "-updated": ("Recently changed", ["-updated_at", "-pk"]),
    "updated": ("Least recently changed", ["updated_at", "pk"]),
    "-created": ("Newest", ["-pk"]),
    "created": ("Oldest", ["pk"]),
}
DEFAULT_SORT = "handle"


def _sort_choices() -> list[tuple[str, str]]:
    return [(key, label) for key, (label, _) in SORTS.items()]


SEARCH = Filter("q", "Search", clean=_search, apply=handle_search, describe=lambda v: f'matching "{v}"')
PREFIX = Filter("prefix", "Prefix", clean=_by_id(Prefix, "prefix", "unknown_prefix"),
                apply=lambda qs, p: qs.filter(prefix_id=p.pk), describe=lambda p: f"of prefix {p.prefix}",
                choices=lambda: [(str(p.pk), p.prefix) for p in Prefix.objects.order_by("prefix")])
STATUS = Filter("status", "Status", clean=_one_of("status", lambda: Handle.Status.choices),
                apply=lambda qs, v: qs.filter(status=v), describe=lambda v: f"status {v}",
                choices=lambda: Handle.Status.choices)
SYNC = Filter("sync", "Sync with the server", clean=_one_of("sync state", lambda: SyncState.CHOICES),
              apply=filter_sync_state, describe=lambda v: f"sync {SyncState.LABELS[v].lower()}",
              choices=lambda: SyncState.CHOICES)
SOURCE = Filter("source", "Source system", clean=_known_source,
                apply=lambda qs, v: qs.filter(asset__source_system=v), describe=lambda v: f"from {v}",
                choices=lambda: [(s, s) for s in source_systems()])
HEALTH = Filter("health", "Latest health check", clean=_one_of("health check outcome", health_choices),
                apply=_last_health, describe=lambda v: f"latest health check {dict(health_choices())[v].lower()}",
                choices=health_choices)
COLLECTION = Filter("collection", "Collection", clean=_by_id(Collection, "collection", "unknown_collection"),
                    apply=lambda qs, c: qs.filter(c.handle_q()), describe=lambda c: f"in collection {c}",
                    choices=lambda: [(str(c.pk), c.name) for c in Collection.objects.order_by("name")])
SORT = Filter("sort", "Sort", clean=_one_of("sort order", _sort_choices), choices=_sort_choices)
# The API's: a prefix by name, any well-formed source system, an asset's id, changes since a moment.
API_PREFIX = Filter("prefix", "Prefix", clean=_prefix_by_name, apply=lambda qs, p: qs.filter(prefix_id=p.pk),
                    describe=lambda p: f"of prefix {p.prefix}")
SOURCE_SYSTEM = Filter("source_system", "Source system", clean=_source_name,
                       apply=lambda qs, v: qs.filter(asset__source_system=v), describe=lambda v: f"from {v}")
EXTERNAL_ID = Filter("external_id", "External id", clean=_external_id, strip=False,
                     apply=lambda qs, v: qs.filter(asset__external_id=v), describe=lambda v: f"with asset id {v}")
CHANGED_SINCE = Filter("changed_since", "Changed since", clean=_moment,
                       apply=lambda qs, v: qs.filter(updated_at__gte=v),
                       describe=lambda v: f"changed since {v.isoformat()}")


# --- Filter sets and what they select ---------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """Parameters that passed every check: the handles they select, and how pages and jobs name them."""

    filter_set: HandleFilterSet
    values: dict[str, Any]  # by parameter, as each filter's clean() returned it
    raw: dict[str, str] = field(default_factory=dict)

    def queryset(self, base: QuerySet | None = None) -> QuerySet:
        queryset = Handle.objects.all() if base is None else base
        # The search last: a full handle is looked up exactly within what the other filters kept.
        for name, value in sorted(self.values.items(), key=lambda item: item[0] == "q"):
            apply = self.filter_set.filters[name].apply
            if apply is not None:
                queryset = apply(queryset, value)
        return queryset

    def as_params(self) -> dict[str, str]:
        """The filter parameters as given (the sort left out): for links and a job's stored selection."""
        return {name: value for name, value in self.raw.items() if self.filter_set.filters[name].apply}

    def describe(self) -> str:
        parts = [f.describe(self.values[name]) for name, f in self.filter_set.filters.items()
                 if name in self.values and f.apply is not None]
        return "all handles " + ", ".join(parts) if parts else "all handles"

    @property
    def sort(self) -> str:
        return self.values.get("sort") or DEFAULT_SORT

    @property
    def keyset(self) -> Keyset:
        return Keyset.of(Handle, SORTS[self.sort][1])


class HandleFilterSet:
    """A vocabulary of filters. parse() checks every parameter and returns the Selection, or raises
    InvalidFilter naming each parameter refused."""

    def __init__(self, *filters: Filter) -> None:
        self.filters = {f.name: f for f in filters}

    def parse(self, params: Mapping[str, Any], *, also: Iterable[str] = (), blank_refused: bool = False) -> Selection:
        """`also`: parameters the caller reads itself (cursors, paging), accepted and left alone.
        `blank_refused`: an empty value is refused (the API) instead of meaning "not filtered" (an HTML
        form sends every field)."""
        also = set(also)
        problems: dict[str, Problem] = {}
        values: dict[str, Any] = {}
        raw: dict[str, str] = {}
        for name in params:
            if name in also:
                continue
            if name not in self.filters:
                problems[name] = Problem("unknown_field", f"Unknown parameter {name!r} (the parameters are: "
                                                          f"{', '.join([*self.filters, *sorted(also)])}).")
                continue
            text = _last(params, name)
            if text.strip() == "":
                if blank_refused:
                    problems[name] = Problem("blank", "Empty; leave the parameter out instead.")
                continue
            if "\x00" in text:
                problems[name] = Problem("null_characters_not_allowed", "Contains a NUL character.")
                continue
            if self.filters[name].strip:
                text = text.strip()
            try:
                values[name] = self.filters[name].clean(text)
            except Refused as exc:
                problems[name] = exc.problem
            else:
                raw[name] = text
        if "external_id" in values and "source_system" not in values and "source_system" not in problems:
            problems["external_id"] = Problem("source_system_required",
                                              "Filtering by external_id needs source_system too.")
        if problems:
            raise InvalidFilter(problems)
        return Selection(self, values, raw)

    def choices(self, name: str) -> list[tuple[str, str]]:
        offered = self.filters[name].choices
        return offered() if offered else []


def _last(params: Mapping[str, Any], name: str) -> str:
    """The parameter's value: the last one given (as QueryDict.get), as text."""
    value = params.get(name)
    if isinstance(value, list | tuple):
        value = value[-1] if value else ""
    return "" if value is None else str(value)


# The admin's handle list (and the selections of bulk jobs, stored as its parameters).
DESK = HandleFilterSet(SEARCH, PREFIX, STATUS, SYNC, SOURCE, HEALTH, COLLECTION)
# /browse/ and its CSV export: the admin's filters, and a sort order.
BROWSE = HandleFilterSet(*DESK.filters.values(), SORT)
# The JSON API's list of handles.
API = HandleFilterSet(API_PREFIX, STATUS, SOURCE_SYSTEM, EXTERNAL_ID, CHANGED_SINCE)

API_BY_ID = ["pk"]
API_BY_CHANGE = ["updated_at", "pk"]


@dataclass(frozen=True)
class ApiSelection:
    handles: QuerySet  # filtered and ordered by `keyset`, not yet limited to the caller's prefixes
    prefix: Prefix | None  # the prefix asked for: the caller must be allowed it
    keyset: Keyset  # by id; by (updated_at, id) with changed_since, so a change sync sees each change once


def api_handles(params: Mapping[str, Any], *, paging: Iterable[str] = ("cursor", "limit")) -> ApiSelection:
    """The API's list: the handles its query string selects, or InvalidFilter (per parameter, with the
    API's codes: unknown_field, blank, unknown_prefix, invalid_prefix, invalid_choice, invalid,
    invalid_source_system, source_system_required, max_length, null_characters_not_allowed).
    `paging`: the parameters the API reads itself (accepted, not filtered on)."""
    selection = API.parse(params, also=paging, blank_refused=True)
    order = API_BY_CHANGE if "changed_since" in selection.values else API_BY_ID
    return ApiSelection(selection.queryset().order_by(*order), selection.values.get("prefix"),
                        Keyset.of(Handle, order))
