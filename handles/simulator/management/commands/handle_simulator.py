"""`manage.py handle_simulator`: run the Handle server simulator in the foreground (Ctrl-C stops it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from handles.simulator.cli import SECRET_ENV
from handles.simulator.server import serve


def default_data_dir() -> Path:
    return Path(settings.VAR_DIR) / "simulator"


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # the simulator does not use the app's models or database
    help = ("Run a simulated HANDLE.NET 9.3.1 server (JSON REST API, HTTP and HTTPS on one port) for "
            "development, demos and tests. The admin secret comes from --secret or $HANDLE_SIMULATOR_SECRET.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--data-dir", type=Path, default=None,
                            help="records, certificate and fault switch (default: var/simulator)")
        parser.add_argument("--prefix", action="append", default=[], help="a prefix to serve (repeatable)")
        parser.add_argument("--admin-handle", help="the admin identity handle (default PREFIX/ADMIN per prefix)")
        parser.add_argument("--secret", help=f"the admin identity's secret key (default: ${SECRET_ENV})")
        parser.add_argument("--load-csv", type=Path, help="bulk-load handle,url rows before serving")
        parser.add_argument("--verbose", action="store_true", help="log every request")

    def handle(self, *args: Any, **options: Any) -> None:
        secret = options["secret"] or os.environ.get(SECRET_ENV)
        if not secret:
            raise CommandError(f"No secret for the simulator's admin identity: pass --secret or set "
                               f"{SECRET_ENV}. Refusing to start.")
        try:
            serve(options["data_dir"] or default_data_dir(), options["prefix"], secret,
                  host=options["host"], port=options["port"], admin_handle=options["admin_handle"],
                  csv_path=options["load_csv"], verbose=options["verbose"], announce=self._announce)
        except (ValueError, OSError) as exc:
            raise CommandError(str(exc)) from exc

    def _announce(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
