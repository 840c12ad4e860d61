"""`make run`: the simulator, the web app and one worker, in the foreground; Ctrl-C stops all three."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from handles import demo


def _command_of(process: subprocess.Popen, words: int) -> str:
    """The first words of the command line a process was started with, for a message."""
    args = process.args
    return " ".join(map(str, args[:words])) if isinstance(args, list) else str(args)


def _wait_for_port(host: str, port: int, process: subprocess.Popen, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CommandError(f"{_command_of(process, 3)} exited with code {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise CommandError(f"nothing listens on {host}:{port} after {seconds:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


class Command(BaseCommand):
    help = "Run the Handle server simulator, the web app and a django-q2 worker together (development)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HANDLES_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("HANDLES_PORT", "8000")))
        parser.add_argument("--simulator-port", type=int, default=int(os.environ.get("HANDLES_SIMULATOR_PORT", "8001")))
        parser.add_argument("--no-simulator", action="store_true",
                            help="Do not start the simulator (prefixes point at a real Handle server).")

    def handle(self, *args: Any, **options: Any) -> None:
        host, port, sim_port = options["host"], options["port"], options["simulator_port"]
        # `kill` (SIGTERM) stops the three processes like Ctrl-C does, instead of orphaning them.
        signal.signal(signal.SIGTERM, _interrupt)
        busy = [p for p in ([port] + ([] if options["no_simulator"] else [sim_port])) if _port_in_use(host, p)]
        if busy:
            raise CommandError(f"port {busy[0]} is already in use (is another `make run` running?); "
                               "choose others with HANDLES_PORT / HANDLES_SIMULATOR_PORT")
        secret = os.environ.get(demo.DEMO_SECRET_ENV, "")
        if not secret and not options["no_simulator"]:
            raise CommandError(f"Set {demo.DEMO_SECRET_ENV} (make run does) for the simulator's admin secret.")
        python = sys.executable
        processes: list[subprocess.Popen] = []
        sim_dir = Path(settings.VAR_DIR) / "simulator"
        try:
            if not options["no_simulator"]:
                sim = subprocess.Popen([python, "-m", "handles.simulator", "--host", "127.0.0.1",
                                        "--port", str(sim_port), "--data-dir", str(sim_dir),
                                        "--prefix", demo.DEMO_PREFIX, "--secret", secret])
                processes.append(sim)
                _wait_for_port("127.0.0.1", sim_port, sim)
                for line in demo.seed(server_url=f"https://127.0.0.1:{sim_port}",
                                      certificate_path=sim_dir / "serverCertificate.pem",
                                      username=os.environ.get("HANDLES_DEMO_USER", "admin"),
                                      password=os.environ.get("HANDLES_DEMO_PASSWORD", "admin")):
                    self.stdout.write(f"  demo: {line}")
            call_command("collectstatic", interactive=False, verbosity=0)
            web = subprocess.Popen([python, "manage.py", "runserver", f"{host}:{port}", "--noreload", "--insecure"])
            processes.append(web)
            worker = subprocess.Popen([python, "manage.py", "qcluster"])
            processes.append(worker)
            _wait_for_port(host, port, web)
            self.stdout.write(self.style.SUCCESS(
                f"\nHandles is running.\n"
                f"  Web app:   http://{host}:{port}/admin/   (demo login: "
                f"{os.environ.get('HANDLES_DEMO_USER', 'admin')} / {os.environ.get('HANDLES_DEMO_PASSWORD', 'admin')})\n"
                + ("" if options["no_simulator"] else
                   f"  Simulator: https://127.0.0.1:{sim_port}/api/handles/{demo.DEMO_PREFIX}/ADMIN  "
                   f"(a Handle.net server stand-in; data in {sim_dir})\n")
                + "  Worker:    django-q2 cluster (qcluster)\n"
                "Press Ctrl-C to stop all three.\n"
                "Management commands in another terminal need the same development settings"
                " (and DATABASE_URL, if you set one):\n"
                f"  export HANDLES_DEV=1{f' {demo.DEMO_SECRET_ENV}={secret}' if secret else ''}\n"
                "  .venv/bin/python manage.py import_handles --help\n"))
            while all(p.poll() is None for p in processes):
                time.sleep(0.5)
            failed = [p for p in processes if p.poll() is not None]
            raise CommandError(f"{_command_of(failed[0], 4)} stopped (exit {failed[0].returncode})")
        except KeyboardInterrupt:
            self.stdout.write("\nStopping...")
        finally:
            for p in reversed(processes):
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 10
            for p in processes:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
