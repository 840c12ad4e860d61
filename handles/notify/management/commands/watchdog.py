"""`manage.py watchdog [PREFIX ...]`: run the prefix watchdog now and print each check (what the schedule
does every five minutes; alarms and recoveries are notified the same way)."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from handles.labels import counted
from handles.models import Prefix
from handles.notify import watchdog
from handles.notify.services import CHECK_LABELS

MARKS = {True: "pass", False: "FAIL", None: "----"}


class Command(BaseCommand):
    help = "Run the prefix watchdog now and print each check's result."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefixes", nargs="*", help="Prefixes to watch (default: every prefix).")

    def handle(self, *args: Any, **options: Any) -> None:
        prefixes = Prefix.objects.order_by("prefix")
        if options["prefixes"]:
            prefixes = prefixes.filter(prefix__in=options["prefixes"])
            missing = set(options["prefixes"]) - set(prefixes.values_list("prefix", flat=True))
            if missing:
                raise CommandError(f"No such prefix: {', '.join(sorted(missing))}.")
        failing = 0
        for prefix in prefixes:
            run = watchdog.watch(prefix.pk)
            if run is None:  # the prefix was deleted meanwhile
                continue
            self.stdout.write(f"{prefix.prefix}: {run.light}")
            for result in run.results:
                label = CHECK_LABELS.get(result["check"], result["check"])
                self.stdout.write(f"  [{MARKS[result['ok']]}] {label}: {result['detail']}")
            failing += bool(run.failing)
        if failing:
            raise CommandError(f"{counted(failing, 'prefix', 'prefixes')} failing.")
