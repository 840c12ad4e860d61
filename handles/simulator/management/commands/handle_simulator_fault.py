"""`manage.py handle_simulator_fault MODE`: make a running Handle server simulator misbehave, or stop it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from handles.simulator.faults import FAULT_MODES, write_faults
from handles.simulator.management.commands.handle_simulator import default_data_dir


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # the simulator does not use the app's models or database
    help = ("Set the simulator's fault mode: ok (normal), slow (answer after --delay s), 503 (server too busy), "
            "drop (read the request, close without answering), down (refuse connections), shutdown (a real "
            "server's last seconds after SIGTERM: credentials refused with 401), nolist (listing handles refused, "
            "as allow_list_hdls = no). "
            "--for S switches the fault off again after S seconds.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("mode", choices=FAULT_MODES)
        parser.add_argument("--data-dir", type=Path, default=None, help="the simulator's data dir (default: var/simulator)")
        parser.add_argument("--delay", type=float, help="seconds to wait before answering (slow)")
        parser.add_argument("--for", dest="duration", type=float, help="seconds until the fault ends by itself")

    def handle(self, *args: Any, **options: Any) -> None:
        data_dir = options["data_dir"] or default_data_dir()
        if not data_dir.is_dir():
            raise CommandError(f"{data_dir} is not a simulator data dir (start handle_simulator first)")
        try:
            fault = write_faults(data_dir, options["mode"], delay=options["delay"],
                                 duration=options["duration"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        detail = f", delay {fault.delay:g} s" if fault.mode == "slow" else ""
        until = f" for {options['duration']:g} s" if fault.until else " until changed"
        self.stdout.write(f"Simulator in {data_dir}: fault mode {fault.mode}{detail}{until if fault.mode != 'ok' else ''}")
