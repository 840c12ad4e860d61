"""Run the Handle server simulator (handles/simulator/) as a real subprocess for tests.

    with SimulatorProcess(tmp_path, prefixes=["20.500.12345"], secret="s3cret") as sim:
        requests.get(f"{sim.base_url}/api/handles/20.500.12345/ADMIN", verify=...)
        sim.set_fault("503", duration=2)   # the next 2 s of requests get 503 / rc 3

`SimulatorClient` is a small keep-alive HTTP(S) client pinned to the simulator's self-signed certificate,
for tests that check the server itself (status, headers and body exactly as sent).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode

from handles.simulator.certificates import client_certificate_path
from handles.simulator.cli import SECRET_ENV
from handles.simulator.datadir import CERT_FILE, KEY_FILE
from handles.simulator.faults import clear_faults, write_faults

PROJECT_ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "Handle simulator listening on"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SimulatorProcess:
    """The simulator on 127.0.0.1 in its own process; `port` stays the same across restart()."""

    def __init__(self, data_dir: str | Path, prefixes: list[str] | tuple[str, ...] = ("20.500.12345",),
                 secret: str = "test-secret-key-123", admin_handle: str | None = None, port: int | None = None,
                 startup_timeout: float = 10.0) -> None:
        self.data_dir = Path(data_dir)
        self.prefixes = list(prefixes)
        self.secret = secret
        self.admin_handle = admin_handle
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.log_path = self.data_dir / "simulator.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cert_path(self) -> Path:
        """The self-signed server certificate (PEM), created at first start and reused afterwards."""
        return self.data_dir / CERT_FILE

    @property
    def admin_identity(self) -> str:
        return f"300:{self.admin_handle or self.prefixes[0] + '/ADMIN'}"

    @property
    def client_identity(self) -> str:
        """The admin's public-key identity (HS_PUBKEY at 301), for client-certificate login."""
        return f"301:{self.admin_handle or self.prefixes[0] + '/ADMIN'}"

    @property
    def client_cert_path(self) -> Path:
        return client_certificate_path(self.data_dir, self.client_identity.partition(":")[2])

    @property
    def client_key_path(self) -> Path:
        return self.data_dir / KEY_FILE

    def start(self) -> SimulatorProcess:
        if self._process is not None:
            raise RuntimeError("the simulator is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "handles.simulator", "--host", "127.0.0.1",
                   "--port", str(self.port), "--data-dir", str(self.data_dir)]
        for prefix in self.prefixes:
            command += ["--prefix", prefix]
        if self.admin_handle:
            command += ["--admin-handle", self.admin_handle]
        # The secret goes through the environment, not argv, so it does not show in `ps`.
        env = {**os.environ, SECRET_ENV: self.secret,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        self._log = open(self.log_path, "ab")  # closed in stop()
        log_start = self._log.tell()
        self._process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=self._log,
                                         stderr=subprocess.STDOUT)
        try:
            self._wait_until_ready(log_start)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self, log_start: int) -> None:
        """Ready = it printed its listening line and a TCP connect succeeds (not some other process's port)."""
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise RuntimeError(f"the Handle simulator exited with code {code} during startup:\n{self._log_tail(log_start)}")
            if READY_LINE in self._log_tail(log_start):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"the Handle simulator did not accept connections on 127.0.0.1:{self.port} within "
                           f"{self.startup_timeout:g} s; its output:\n{self._log_tail(log_start)}")

    def _log_tail(self, start: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(start)
            return log.read().decode("utf-8", "replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM (the simulator shuts down cleanly), then SIGKILL if it is still there after 5 s."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> SimulatorProcess:
        self.stop()
        return self.start()

    def set_fault(self, mode: str, delay: float | None = None, duration: float | None = None) -> None:
        """ok | slow (needs delay) | 503 | drop | down | shutdown; `duration` seconds, else until cleared."""
        write_faults(self.data_dir, mode, delay=delay, duration=duration)

    def clear_faults(self) -> None:
        clear_faults(self.data_dir)

    def tls_context(self) -> ssl.SSLContext:
        """Pin the self-signed certificate and skip the hostname check (CN=anonymous, no SAN) (docs/handle-server.md §3)."""
        context = ssl.create_default_context(cafile=str(self.cert_path))
        context.check_hostname = False
        return context

    def basic_auth(self, secret: str | None = None, identity: str | None = None) -> str:
        """`Authorization` value: Basic with the identity's colon percent-encoded (docs/handle-server.md §7)."""
        user = quote(identity or self.admin_identity, safe="")
        token = base64.b64encode(f"{user}:{secret or self.secret}".encode()).decode()
        return f"Basic {token}"

    def client(self, https: bool = True, timeout: float = 10.0) -> SimulatorClient:
        return SimulatorClient(self, https=https, timeout=timeout)

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


class SimulatorClient:
    """One keep-alive connection; a request after a connection error opens a new one."""

    def __init__(self, sim: SimulatorProcess, https: bool = True, timeout: float = 10.0) -> None:
        self.sim, self.https, self.timeout = sim, https, timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection("127.0.0.1", self.sim.port, timeout=self.timeout,
                                                         context=self.sim.tls_context())
            else:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.sim.port, timeout=self.timeout)
        return self._conn

    def request(self, method: str, path: str, *, query: dict[str, Any] | list[tuple[str, Any]] | str | None = None,
                body: Any = None, headers: dict[str, str] | None = None, auth: bool | str = False) -> Reply:
        """`body`: bytes/str as is, anything else as JSON (with Content-Type: application/json).
        `auth`: True = the admin's Basic credentials, or a ready `Authorization` value."""
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = self.sim.basic_auth() if auth is True else auth
        if body is not None and not isinstance(body, bytes | str):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        if query:
            path += "?" + (query if isinstance(query, str) else urlencode(query, doseq=True))
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return reply

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
