"""`manage.py import_handles FILE`: the dry run of a legacy import, and with --apply, applying it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from handles.exceptions import HandleServiceError
from handles.labels import counted
from handles.models import Prefix
from handles.repair import selectors, services
from handles.repair.csvfile import ImportFileError, csv_lines
from handles.repair.management.commands._wait import (
    add_background_arguments,
    add_wait_arguments,
    report_end,
    report_settled,
    wait_for_job,
    wait_until_settled,
)
from handles.repair.models import MAPPING_FIELDS, ImportBatch, ImportMode, ImportPreset, ImportRow, JobState
from handles.repair.tasks import read_import_conflicts

LEFT_OUT_STATUS = 3  # 1 is an error before anything was read; 2 a --wait that timed out


class Command(BaseCommand):
    help = ("Import existing handles from a CSV file. Without --apply it is a dry run: every line is "
            "classified (new, same, conflict, invalid, duplicate) and nothing is recorded. Exit status 3 when lines "
            "were left out (invalid or conflicting; the message says how many and why).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="CSV file (UTF-8 with or without BOM, unless --encoding says otherwise)")
        parser.add_argument("--preset", help="Read the file with this saved preset's mapping and defaults.")
        parser.add_argument("--save-preset", metavar="NAME", help="Save this mapping and these defaults as a preset.")
        for name in MAPPING_FIELDS:
            parser.add_argument(f"--{name.replace('_', '-')}-column", dest=f"{name}_column", metavar="COLUMN",
                                help=f"The column holding the {name.replace('_', ' ')}.")
        parser.add_argument("--prefix", help="Prefix of lines that give only a suffix.")
        parser.add_argument("--source-system", help="Source system of lines that name none (e.g. alma).")
        parser.add_argument("--url-template", help="Target URL from a template, e.g. "
                            "'https://example.edu/alma{external_id}/view' ({external_id}, {suffix}, {prefix}, "
                            "{source_system}). Default: the prefix's template.")
        parser.add_argument("--mode", choices=ImportMode.values, help="adopt (default): they already resolve; "
                            "record them and verify each. push: create the missing, update the mismatched.")
        parser.add_argument("--encoding", default="", help="utf-8 (default), cp1252 or latin-1.")
        parser.add_argument("--delimiter", default="auto", help="auto (default), ',' ';' or 'tab'.")
        parser.add_argument("--apply", action="store_true", help="Record the new handles (in one transaction).")
        parser.add_argument("--report", metavar="CSV", help="Write the per-line report to this file.")
        add_wait_arguments(parser, "handle")
        add_background_arguments(parser, "dry run (and with --apply, the apply)")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"{path} is not a file.")
        preset = self._preset(options["preset"])
        delimiter = "\t" if options["delimiter"] == "tab" else options["delimiter"]
        try:
            batch = services.import_batch_create(
                file_name=path.name, content=path.read_bytes(), preset=preset, via="command",
                encoding=options["encoding"] or (preset.encoding if preset else "utf-8"), delimiter=delimiter)
        except ImportFileError as exc:
            raise CommandError(exc.message) from None
        mapping = {name: options[f"{name}_column"] if options[f"{name}_column"] is not None
                   else batch.mapping.get(name, "") for name in MAPPING_FIELDS}
        if options["handle_column"] is None and (options["suffix_column"] or options["prefix_column"]):
            mapping["handle"] = ""
        try:
            batch = services.import_batch_configure(
                batch=batch, mapping=mapping, prefix=self._prefix(options["prefix"]) or batch.prefix,
                source_system=options["source_system"] if options["source_system"] is not None else batch.source_system,
                url_template=options["url_template"] if options["url_template"] is not None else batch.url_template,
                mode=options["mode"] or batch.mode, save_preset_as=options["save_preset"] or "")
        except HandleServiceError as exc:
            raise CommandError(f"{exc.message}\nColumns in the file: {', '.join(batch.header)}") from None
        self.stdout.write(f"Import #{batch.pk}: {path.name}, columns mapped as "
                          + ", ".join(f"{k}={v!r}" for k, v in batch.mapping.items()))
        background = options["background"]
        if background:
            batch = services.import_batch_start_analysis(batch=batch)
            self.stdout.write(f"{batch}: dry run queued; a worker (manage.py qcluster) runs it.")
            if not options["wait"] and not options["apply"]:
                return
            batch = wait_for_job(self, "import", batch.pk, timeout=options["timeout"])  # apply follows the dry run
        else:
            batch = services.import_batch_analyse(batch.pk)
        if batch.state == JobState.FAILED:
            raise CommandError(batch.error)
        if not batch.analysed:
            report_end(self, batch, ended_well=lambda job: job.analysed)  # cancelled, say: exit status 1
        if not background and batch.counts.get(ImportRow.Outcome.CONFLICT):
            read_import_conflicts(batch.pk)  # where the server resolves each handle cited for several records
        self._summary(batch)
        if options["report"]:
            self._report(batch, Path(options["report"]))
        if not options["apply"]:
            self.stdout.write("Dry run: nothing was recorded. Add --apply to record the new handles.")
            self._exit_if_left_out(batch)
            return
        if background:
            batch = services.import_batch_start_apply(batch=batch)
            self.stdout.write(f"{batch}: apply queued; the worker records the new handles and verifies each.")
            if options["wait"]:
                batch = wait_for_job(self, "import", batch.pk, timeout=options["timeout"])
                report_end(self, batch, ended_well=lambda job: job.applied)
            self._exit_if_left_out(batch)
            return
        applying_since = timezone.now()
        batch = services.import_batch_apply(batch.pk, via="command")
        if batch.applied_at is None:
            raise CommandError(batch.error or "Nothing was applied.")
        new = batch.counts.get(ImportRow.Outcome.NEW, 0)
        then = ("a verification of each is queued" if batch.mode == ImportMode.ADOPT
                else "each is read from the server and a create, update or verify is queued")
        self.stdout.write(self.style.SUCCESS(f"Applied: {counted(new, 'handle')} recorded ({batch.get_mode_display().split(':')[0]}"
                                             f" mode); {then}. The worker (qcluster) verifies each on the server."))
        if options["wait"]:
            batch = wait_until_settled(self, batch, reload=lambda pk: ImportBatch.objects.defer("content").get(pk=pk),
                                       settle=services.import_batch_settle, timeout=options["timeout"],
                                       task_name=f"import push {batch.pk}", since=applying_since)
        if batch.finished:
            report_settled(self, batch)
        else:
            self.stdout.write(f"{batch} is {batch.get_state_display().lower()}; add --wait to wait for the "
                              "server's confirmation of each handle.")
        self._exit_if_left_out(batch)

    def _exit_if_left_out(self, batch: ImportBatch) -> None:
        """Exit status 3 when lines were left out (invalid or conflicting): a script must not take the file
        for imported whole. What was applied stays applied."""
        left_out = selectors.import_left_out(batch.pk)
        if left_out.count:
            raise CommandError(f"{batch}: {left_out.sentence()} See --report for every line.",
                               returncode=LEFT_OUT_STATUS)

    def _preset(self, name: str | None) -> ImportPreset | None:
        if not name:
            return None
        preset = ImportPreset.objects.filter(name=name).first()
        if preset is None:
            known = ", ".join(ImportPreset.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"No preset named {name!r} (presets: {known}).")
        return preset

    def _prefix(self, name: str | None) -> Prefix | None:
        if not name:
            return None
        prefix = Prefix.objects.filter(prefix__iexact=name).first()
        if prefix is None:
            raise CommandError(f"The prefix {name} is not configured here.")
        return prefix

    def _summary(self, batch: ImportBatch) -> None:
        counts = batch.counts
        self.stdout.write(f"{counted(counts.get('rows', 0), 'line')}: " + ", ".join(
            f"{counts.get(outcome, 0):,} {label.lower()}" for outcome, label in ImportRow.Outcome.choices)
            + (f"; {counts['vendor']:,} from the vendor's sequence" if counts.get("vendor") else ""))
        for row in batch.rows.exclude(outcome__in=[ImportRow.Outcome.NEW, ImportRow.Outcome.SAME]).order_by("line")[:20]:
            self.stdout.write(f"  line {row.line}: {row.outcome}: {row.handle_text} {row.reason}")

    def _report(self, batch: ImportBatch, path: Path) -> None:
        rows = batch.rows.order_by("line").values_list("line", "handle_text", "outcome", "reason", "target_url",
                                                       "source_system", "external_id", "vendor")
        with path.open("w", encoding="utf-8", newline="") as out:
            out.writelines(csv_lines(["line", "handle", "outcome", "reason", "target_url", "source_system",
                                      "external_id", "vendor"], rows.iterator(chunk_size=5000)))
        self.stdout.write(f"Report written to {path}")
