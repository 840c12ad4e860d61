"""A real HANDLE.NET server for the real-server tier: set up in a temporary folder from the distribution
named by HANDLES_REAL_SERVER_DIST (its `start DIR HTTP_PORT TCP_PORT` and `stop DIR` scripts), on free
loopback ports. The distribution folder may be read-only: everything the server writes goes to DIR."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

DIST_ENV = "HANDLES_REAL_SERVER_DIST"
# The server's setup program refuses port numbers of 32001 and above.
PORT_RANGE = (20000, 32000)


def dist_folder() -> Path:
    """The distribution folder, or a one-line failure naming the setting."""
    value = os.environ.get(DIST_ENV, "")
    dist = Path(value) if value else None
    if dist is None or not (dist / "start").is_file():
        raise RuntimeError(f"{DIST_ENV} must name a real HANDLE.NET server folder with its start and stop "
                           f"scripts (e.g. ../shared/real-handle-server); it is {value or 'not set'}")
    return dist.resolve()


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(*PORT_RANGE)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


class RealServer:
    """One server, started once per test session; SIGTERM it and start it again for the fault tests."""

    def __init__(self, dist: Path, folder: Path) -> None:
        self.dist, self.folder = dist, folder
        self.http_port, self.tcp_port = free_ports(2)
        self.env: dict[str, str] = {}

    def start(self) -> RealServer:
        result = subprocess.run([str(self.dist / "start"), str(self.folder), str(self.http_port), str(self.tcp_port)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"the real server did not start: {result.stderr.strip()[-2000:]}")
        self.env = dict(line.split("=", 1) for line in (self.folder / "env").read_text().splitlines() if "=" in line)
        return self

    def stop(self) -> None:
        subprocess.run([str(self.dist / "stop"), str(self.folder)], capture_output=True, timeout=60)

    @property
    def pid(self) -> int:
        return int((self.folder / "server.pid").read_text())

    def terminate(self, *, timeout: float = 60) -> None:
        """SIGTERM (the clean shutdown an operator or systemd does), and wait until it has exited."""
        pid = self.pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        raise AssertionError(f"the real server (PID {pid}) still runs {timeout:.0f} s after SIGTERM")

    def set_config(self, name: str, value: str) -> None:
        """Change one server_config setting in config.dct (as an operator would); takes effect at restart."""
        config = self.folder / "svr" / "config.dct"
        key = f'"{name}" = '
        lines = [line[:line.index(key)] + f'{key}"{value}"' if key in line else line
                 for line in config.read_text().split("\n")]
        config.write_text("\n".join(lines))

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return self.env["HANDLE_SERVER_URL"]

    @property
    def prefix(self) -> str:
        return self.env["HANDLE_SERVER_PREFIX"]

    @property
    def certificate(self) -> str:
        return Path(self.env["HANDLE_SERVER_CERTIFICATE"]).read_text()
