"""`manage.py check_health`: follow handles end to end and report which resolve correctly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from handles.exceptions import HandleServiceError
from handles.models import Handle, Prefix
from handles.repair import health, services
from handles.repair.csvfile import csv_lines
from handles.repair.management.commands._wait import (
    TIMED_OUT,
    add_background_arguments,
    report_end,
    wait_for_job,
)
from handles.repair.models import HandleCheck, HealthOutcome, JobState
from handles.validators import split_handle


class Command(BaseCommand):
    help = ("Check that handles resolve end to end: the server's URL, followed with redirects, must land on the "
            "object (its expected URL, or a URL naming its external id). Each handle keeps its last check.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("handles", nargs="*", help="Only these handles (11084/99, hdl:..., resolver URLs).")
        parser.add_argument("--prefix", action="append", default=[], help="Only this prefix (repeatable).")
        parser.add_argument("--source-system", default="", help="Only handles of assets from this source system.")
        parser.add_argument("--status", choices=[Handle.Status.ACTIVE, Handle.Status.PENDING, Handle.Status.TOMBSTONED])
        parser.add_argument("--limit", type=int, help="Check at most this many handles.")
        parser.add_argument("--proxy", action="store_true", help="Resolve through the proxy resolver "
                            "(HANDLES_HEALTH_PROXY_BASE, https://hdl.handle.net by default).")
        parser.add_argument("--title-check", action="store_true", help="Also compare page and asset titles.")
        parser.add_argument("--csv", metavar="FILE", help="Write the handles that do not resolve correctly here.")
        add_background_arguments(parser, "health check")
        parser.add_argument("--wait", action="store_true", help="With --background: wait for the worker to end the "
                            "check, print its counts, and exit non-zero unless it ended done.")
        parser.add_argument("--timeout", type=float, default=24 * 3600, metavar="SECONDS",
                            help=f"With --wait: give up waiting after this long (exit status {TIMED_OUT}).")

    def handle(self, *args: Any, **options: Any) -> None:
        filters = {"source_system": options["source_system"], "status": options["status"] or "",
                   "limit": options["limit"], "via_proxy": options["proxy"], "title_check": options["title_check"],
                   "prefix_ids": self._prefixes(options["prefix"]), "handle_ids": self._handles(options["handles"])}
        background = options["background"]
        try:
            run = services.health_start(filters={k: v for k, v in filters.items() if v}, via="command",
                                        enqueue=background)
        except HandleServiceError as exc:
            raise CommandError(exc.message) from None
        if background:
            self.stdout.write(f"{run} queued; a worker (manage.py qcluster) runs it in slices.")
            if not options["wait"]:
                return
            run = wait_for_job(self, "health", run.pk, timeout=options["timeout"])
        else:
            run = health.run(run.pk, on_progress=lambda done, total, summary: self.stdout.write(
                f"  {done:,} of {total:,} checked ({summary})"))
        if run.state != JobState.DONE:
            report_end(self, run)
        checked = sum(run.counts.get(o, 0) for o in HealthOutcome.values)
        correct = run.counts.get(HealthOutcome.CORRECT, 0)
        self.stdout.write(f"Health check #{run.pk}: {checked:,} checked, {correct:,} resolve correctly"
                          + (f" ({correct / checked:.1%})" if checked else "") + "; " + ", ".join(
                              f"{label.lower()} {run.counts.get(o, 0):,}" for o, label in HealthOutcome.choices[1:]))
        failing = HandleCheck.objects.filter(run=run).failing().select_related("handle__prefix").order_by("outcome")
        for check in failing[:50]:
            self.stdout.write(f"  {check.handle.full_handle}: {check.outcome}: {check.detail}")
        if options["csv"]:
            rows = ((c.handle.full_handle, c.outcome, c.http_status, c.server_url, c.final_url, c.detail)
                    for c in failing.iterator(chunk_size=2000))
            with Path(options["csv"]).open("w", encoding="utf-8", newline="") as out:
                out.writelines(csv_lines(["handle", "outcome", "http_status", "server_url", "final_url", "detail"],
                                         rows))
            self.stdout.write(f"Written to {options['csv']}")

    def _prefixes(self, names: list[str]) -> list[int]:
        ids = []
        for name in names:
            prefix = Prefix.objects.filter(prefix__iexact=name).first()
            if prefix is None:
                raise CommandError(f"The prefix {name} is not configured here.")
            ids.append(prefix.pk)
        return ids

    def _handles(self, names: list[str]) -> list[int]:
        ids = []
        for name in names:
            try:
                prefix, suffix = split_handle(name)
            except ValidationError as exc:
                raise CommandError(f"{name}: {' '.join(exc.messages)}") from None
            handle = Handle.objects.by_name(prefix, suffix).first()
            if handle is None:
                raise CommandError(f"{name} is not a handle recorded here.")
            ids.append(handle.pk)
        return ids
