"""`manage.py check_handle_server PREFIX`: Check connection from the command line (exit 0 only when all
steps pass); the same report as the Prefix admin's "Check connection" page."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from handles.connection_check import check_connection, format_report
from handles.models import Prefix


class Command(BaseCommand):
    help = ("Check step by step that PREFIX's Handle server is set up as the app needs (HTTPS, TLS, homed, "
            "credentials, create/read/update/delete of a scratch handle, listing, HS_ADMIN). "
            "Exit status 0 only when every step passes.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="e.g. 20.500.14725")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = Prefix.objects.filter(prefix__iexact=options["prefix"]).first()
        if prefix is None:
            known = ", ".join(Prefix.objects.values_list("prefix", flat=True)) or "none"
            raise CommandError(f"No prefix {options['prefix']} here (configured: {known}).")
        report = check_connection(prefix)
        self.stdout.write(format_report(report))
        if not report.ok:
            raise CommandError(f"Check connection failed for {prefix.prefix}.", returncode=1)
