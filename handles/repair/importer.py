"""The dry run of an import: every line of the file classified against the file itself and our records.

Reads only. One streaming pass keeps memory small for large files: each line is validated, compared with
the lines before it (a repeat is a duplicate; the same handle with another target or asset is a conflict)
and, a chunk at a time, with our records looked up in bulk. A conflict found late also concerns the
earlier lines of that handle: `Analysis.fixups` lists them for the caller to mark once the pass is done.
Outcomes: new, same (already here with the same target and asset), conflict (the same handle with another
URL or asset, here or elsewhere in the file), invalid (with the reason), duplicate (a repeat of a line).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError

from handles.models import Handle, Prefix
from handles.repair import rules
from handles.repair.csvfile import CsvLayout, ImportFileError, looks_like_formula, records
from handles.repair.models import MAPPING_FIELDS, ImportRow
from handles.validators import ascii_upper, split_handle, validate_suffix, validate_target_url

Outcome = ImportRow.Outcome
CHUNK = 5000
_SOURCE_SYSTEM = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_BARE_RESOLVER = re.compile(r"^hdl\.handle\.net/", re.IGNORECASE)
ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ImportOptions:
    """How to read a file: which column is which of our fields, and the defaults for what it lacks."""

    mapping: dict[str, str]
    prefix: Prefix | None = None
    source_system: str = ""
    url_template: str = ""

    def column(self, name: str) -> str:
        return self.mapping.get(name, "") or ""


# Column names seen in real files, per field of ours (compared lower-case, without spaces or punctuation).
_KNOWN_COLUMNS = {
    "handle": ("handle", "handleurl", "hdl", "handleid", "pid", "persistentidentifier", "identifier"),
    "prefix": ("prefix", "handleprefix"),
    "suffix": ("suffix", "handlesuffix"),
    "url": ("url", "targeturl", "target", "location", "landingpage"),
    "source_system": ("sourcesystem", "source", "system"),
    "external_id": ("externalid", "mmsid", "nodeid", "recordid", "objectid", "id"),
    "title": ("title", "dctitle", "name"),
}


def guess_mapping(header: list[str]) -> dict[str, str]:
    """A first mapping for the upload form, from the column names (staff confirm or change it)."""
    normalized = {re.sub(r"[^0-9a-z]", "", name.lower()): name for name in header if name}
    mapping = {}
    for field_name, known in _KNOWN_COLUMNS.items():
        mapping[field_name] = next((normalized[k] for k in known if k in normalized), "")
    if mapping["handle"] and mapping["suffix"]:
        mapping["suffix"] = mapping["prefix"] = ""
    return mapping


def options_errors(options: ImportOptions, header: list[str]) -> list[str]:
    """Why these options cannot read a file with this header ([] if they can)."""
    errors = []
    for name in MAPPING_FIELDS:
        column = options.column(name)
        if column and column not in header:
            errors.append(f"The {name.replace('_', ' ')} column {column!r} is not in the file "
                          f"(its columns: {', '.join(repr(h) for h in header if h)}).")
    if not options.column("handle") and not options.column("suffix"):
        errors.append("Map the column holding the handle (or the suffix).")
    if options.column("suffix") and not options.column("handle") and not options.column("prefix") \
            and options.prefix is None:
        errors.append("The file gives suffixes only: choose their prefix, or map a prefix column.")
    if options.source_system and not _SOURCE_SYSTEM.match(options.source_system.lower()):
        errors.append("The source system uses lower-case letters, digits, '.', '_' and '-' (e.g. alma).")
    if options.url_template and (problem := rules.template_error(options.url_template)):
        errors.append(problem)
    return errors


@dataclass(slots=True)
class Verdict:
    line: int
    handle_text: str = ""
    prefix_id: int | None = None
    suffix: str = ""
    suffix_key: str = ""
    target_url: str = ""
    source_system: str = ""
    external_id: str = ""
    title: str = ""
    outcome: str = ""
    reason: str = ""
    vendor: bool = False
    primary: bool = False
    handle_id: int | None = None

    @property
    def key(self) -> tuple[int | None, str]:
        return self.prefix_id, self.suffix_key

    @property
    def asset_key(self) -> tuple[str, str] | None:
        return (self.source_system, self.external_id) if self.external_id else None

    def invalid(self, reason: str) -> Verdict:
        self.outcome, self.reason = Outcome.INVALID, reason
        return self


class _RowReader:
    def __init__(self, options: ImportOptions, header: list[str], prefixes: list[Prefix]) -> None:
        self.options = options
        self.positions = {name: header.index(options.column(name)) if options.column(name) else None
                          for name in MAPPING_FIELDS}
        self.prefixes = {ascii_upper(p.prefix): p for p in prefixes}
        self.vendor = {p.pk: rules.vendor_matcher(p) for p in prefixes}
        self.source_system = options.source_system.strip().lower()
        self.template_problems: dict[str, str] = {}
        self.max_url_length = settings.HANDLES_MAX_URL_LENGTH

    def read(self, line: int, cells: list[str], problem: str) -> Verdict:
        cell = {name: cells[i] if i is not None else "" for name, i in self.positions.items()}
        verdict = Verdict(line=line, handle_text=cell["handle"] or "/".join(filter(None, [cell["prefix"], cell["suffix"]])))
        if problem:
            return verdict.invalid(_sentence(problem))
        for name, value in cell.items():
            if value and looks_like_formula(value):
                return verdict.invalid(f"The {name.replace('_', ' ')} cell {value[:40]!r} looks like a spreadsheet "
                                       "formula; it was not imported.")
        prefix, suffix, error = self._name(cell)
        if prefix is None:  # and error says why
            return verdict.invalid(error)
        verdict.prefix_id, verdict.suffix, verdict.suffix_key = prefix.pk, suffix, ascii_upper(suffix)
        verdict.handle_text = f"{prefix.prefix}/{suffix}"
        verdict.vendor = self.vendor[prefix.pk](suffix)
        verdict.source_system = (cell["source_system"] or self.source_system).lower()
        verdict.external_id, verdict.title = cell["external_id"], cell["title"]
        if verdict.external_id:
            if not verdict.source_system:
                return verdict.invalid("An external id needs a source system: map its column or give a default.")
            if not _SOURCE_SYSTEM.match(verdict.source_system):
                return verdict.invalid(f"The source system {verdict.source_system!r} is not of the form 'alma' or "
                                       "'dams' (lower-case letters, digits, '.', '_', '-').")
            if len(verdict.external_id) > 255:
                return verdict.invalid("The external id is longer than 255 characters.")
        if len(verdict.title) > 1000:
            return verdict.invalid("The title is longer than 1,000 characters.")
        url, error = self._target(cell, prefix, verdict)
        if error:
            return verdict.invalid(error)
        verdict.target_url = url
        return verdict

    def _name(self, cell: dict[str, str]) -> tuple[Prefix | None, str, str]:
        text = cell["handle"]
        try:
            if text:
                text = _BARE_RESOLVER.sub("", text)
                if "/" not in text and self.options.prefix is not None:
                    prefix_text, suffix = self.options.prefix.prefix, text
                    validate_suffix(suffix)
                else:
                    prefix_text, suffix = split_handle(text)
            elif cell["suffix"]:
                prefix_text = cell["prefix"] or (self.options.prefix.prefix if self.options.prefix else "")
                suffix = cell["suffix"]
                if not prefix_text:
                    return None, "", "The line gives a suffix but no prefix."
                validate_suffix(suffix)
            else:
                return None, "", "The line has no handle."
        except ValidationError as exc:
            return None, "", " ".join(exc.messages)
        prefix = self.prefixes.get(ascii_upper(prefix_text))
        if prefix is None:
            return None, "", f"The prefix {prefix_text} is not configured here; add it under Prefixes first."
        return prefix, suffix, ""

    def _target(self, cell: dict[str, str], prefix: Prefix, verdict: Verdict) -> tuple[str, str]:
        url = cell["url"]
        if url:
            try:
                validate_target_url(url)
            except ValidationError as exc:
                return "", " ".join(exc.messages)
            return url, ""
        template = self.options.url_template or prefix.url_template
        if not template:
            return "", "No target URL: map a URL column, or give a URL template (here or on the prefix)."
        if template not in self.template_problems:
            self.template_problems[template] = rules.template_error(template)
        if self.template_problems[template]:
            return "", self.template_problems[template]
        try:
            url = rules.render_template(template, {"external_id": verdict.external_id, "suffix": verdict.suffix,
                                                   "prefix": prefix.prefix, "source_system": verdict.source_system})
        except rules.MissingTemplateValue as exc:
            return "", _sentence(str(exc))
        # The template was validated once; the values it took are percent-encoded, so only length can fail.
        if len(url) > self.max_url_length:
            return "", f"The URL from the template is longer than {self.max_url_length} characters."
        return url, ""


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _signature(v: Verdict) -> int:
    return hash((v.target_url, v.asset_key))


@dataclass
class Fixup:
    """Lines written before the pass learned the whole truth about their handle or asset."""

    conflicts: dict[tuple[int | None, str], list[int]] = field(default_factory=dict)  # key → lines that differ
    not_primary: list[int] = field(default_factory=list)  # lines that lost their asset's primary to a later one


class Analysis:
    """One pass over a file. Iterate `chunks()`, then apply `fixups` to the lines already written."""

    def __init__(self, text: str, layout: CsvLayout, options: ImportOptions, *, max_cell: int,
                 max_rows: int) -> None:
        self.text, self.layout, self.max_cell, self.max_rows = text, layout, max_cell, max_rows
        self.reader = _RowReader(options, layout.header, list(Prefix.objects.all()))
        self.fixups = Fixup()
        self.rows = 0
        self._first: dict[tuple[int | None, str], tuple[int, int]] = {}  # handle key → (first line, signature)
        self._primary: dict[tuple[str, str], tuple[int, bool]] = {}  # asset → (its primary line, vendor)

    def chunks(self, progress: ProgressFn | None = None) -> Iterator[list[Verdict]]:
        """The verdicts of every non-blank line, in file order."""
        estimate = max(1, self.text.count("\n"))
        chunk: list[Verdict] = []
        for line, cells, problem in records(self.text, self.layout, self.max_cell):
            self.rows += 1
            if self.rows > self.max_rows:
                raise ImportFileError(f"The file has more than {self.max_rows:,} rows; split it into smaller files.")
            verdict = self.reader.read(line, cells, problem)
            if not verdict.outcome:
                self._against_file(verdict)
            chunk.append(verdict)
            if len(chunk) == CHUNK:
                yield _with_records(chunk)
                chunk = []
                if progress:
                    progress(self.rows, max(estimate, self.rows), "Classifying lines")
        if chunk:
            yield _with_records(chunk)
        if progress:
            progress(self.rows, self.rows, "Classifying lines")

    def _against_file(self, verdict: Verdict) -> None:
        signature = _signature(verdict)
        seen = self._first.get(verdict.key)
        if seen is None:
            self._first[verdict.key] = (verdict.line, signature)
            self._choose_primary(verdict)
        elif seen[1] == signature:
            verdict.outcome, verdict.reason = Outcome.DUPLICATE, f"Repeats line {seen[0]}."
        else:
            lines = self.fixups.conflicts.setdefault(verdict.key, [seen[0]])
            lines.append(verdict.line)
            verdict.outcome = Outcome.CONFLICT

    def _choose_primary(self, verdict: Verdict) -> None:
        """The first legacy handle of an asset is its primary; a vendor handle only when it has no other."""
        asset = verdict.asset_key
        if asset is None:
            return
        chosen = self._primary.get(asset)
        if chosen is None or (chosen[1] and not verdict.vendor):
            if chosen is not None:
                self.fixups.not_primary.append(chosen[0])
            self._primary[asset] = (verdict.line, verdict.vendor)
            verdict.primary = True

    @staticmethod
    def conflict_reason(lines: list[int]) -> str:
        return (f"The file names this handle {len(lines)} times with different targets or assets (lines "
                f"{', '.join(str(n) for n in lines)}); none of them is imported.")


def _with_records(chunk: list[Verdict]) -> list[Verdict]:
    """Decide new / same / conflict for the lines the file itself did not decide."""
    by_prefix: dict[int, list[Verdict]] = {}
    for verdict in chunk:
        if not verdict.outcome and verdict.prefix_id is not None:  # undecided lines all have their prefix
            by_prefix.setdefault(verdict.prefix_id, []).append(verdict)
    for prefix_id, verdicts in by_prefix.items():
        existing = {row[1]: row for row in Handle.objects.filter(
            prefix_id=prefix_id, suffix_key__in=[v.suffix_key for v in verdicts]).values_list(
            "pk", "suffix_key", "target_url", "status", "asset__source_system", "asset__external_id")}
        for verdict in verdicts:
            found = existing.get(verdict.suffix_key)
            if found is None:
                verdict.outcome = Outcome.NEW
                continue
            pk, _, target_url, status, source, external_id = found
            verdict.handle_id, verdict.primary = pk, False
            ours = f"{source}:{external_id}" if external_id else "no asset"
            theirs = f"{verdict.source_system}:{verdict.external_id}"
            if status == Handle.Status.DELETED:
                verdict.outcome = Outcome.CONFLICT
                verdict.reason = "This handle was deleted here; a deleted handle is never reused."
            elif target_url != verdict.target_url:
                verdict.outcome = Outcome.CONFLICT
                verdict.reason = f"Here it points to {target_url}."
            elif verdict.external_id and (source, external_id) != (verdict.source_system, verdict.external_id):
                verdict.outcome = Outcome.CONFLICT
                verdict.reason = f"Here it identifies {ours}, not {theirs}."
            else:
                verdict.outcome = Outcome.SAME
    return chunk
