"""The real-server tier (`make test-real`): a real HANDLE.NET 9.3.1 server started once per session from
the folder HANDLES_REAL_SERVER_DIST names (shared/real-handle-server: `start DIR HTTP_PORT TCP_PORT`,
`stop DIR`), in a temporary folder on free loopback ports, and stopped at the end."""

from __future__ import annotations

import os
import random
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from handles import services
from handles.models import Prefix

DIST_ENV = "HANDLES_REAL_SERVER_DIST"
SECRET_ENV = "HANDLE_SECRET_REAL"
# hdl-setup-server refuses port numbers of 32001 and above.
PORT_RANGE = (20000, 32000)


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.real_server)


def free_port(taken: set[int]) -> int:
    rng = random.SystemRandom()
    while True:
        port = rng.randint(*PORT_RANGE)
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@dataclass
class RealServer:
    dist: Path
    dir: Path
    http_port: int
    tcp_port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.env["HANDLE_SERVER_URL"]

    @property
    def prefix(self) -> str:
        return self.env["HANDLE_SERVER_PREFIX"]

    @property
    def certificate(self) -> str:
        return Path(self.env["HANDLE_SERVER_CERTIFICATE"]).read_text()

    def start(self) -> None:
        done = subprocess.run([str(self.dist / "start"), str(self.dir), str(self.http_port), str(self.tcp_port)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"the real Handle server did not start:\n{done.stdout}\n{done.stderr}")
        self.env = dict(line.split("=", 1) for line in (self.dir / "env").read_text().split("\n") if "=" in line)

    def stop(self) -> None:
        subprocess.run([str(self.dist / "stop"), str(self.dir)], capture_output=True, timeout=120)

    def set_config(self, name: str, value: str) -> None:
        """Change one server_config setting in config.dct (as an operator would); takes effect at restart."""
        config = self.dir / "svr" / "config.dct"
        lines = config.read_text().split("\n")
        key = f'"{name}" = '
        lines = [line[:line.index(key)] + f'{key}"{value}"' if key in line else line for line in lines]
        config.write_text("\n".join(lines))

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def real_server(tmp_path_factory) -> RealServer:
    dist = os.environ.get(DIST_ENV, "")
    if not dist or not (Path(dist) / "start").is_file():
        pytest.fail(f"{DIST_ENV} must name the real Handle server's folder (with its start and stop scripts), "
                    f"e.g. {DIST_ENV}=/work/shared/real-handle-server; it is {dist!r}.", pytrace=False)
    http_port = free_port(set())
    server = RealServer(Path(dist), tmp_path_factory.mktemp("real-handle-server"), http_port,
                        free_port({http_port}), {})
    server.start()
    os.environ[SECRET_ENV] = server.env["HANDLE_SERVER_SECRET"]
    yield server
    server.stop()


@pytest.fixture
def real_prefix(db, real_server) -> Prefix:
    """A prefix that points at the real server: secret-key login, TLS pinned to its certificate."""
    os.environ[SECRET_ENV] = real_server.env["HANDLE_SERVER_SECRET"]
    return services.prefix_save(prefix=Prefix(
        prefix=real_server.prefix, site_name="Real server", is_default=True, server_url=real_server.url,
        auth_identity=real_server.env["HANDLE_SERVER_IDENTITY"], secret_env_var=SECRET_ENV,
        tls_mode=Prefix.TLS.PINNED, pinned_certificate=real_server.certificate,
        hs_admin_handle=f"{real_server.prefix}/ADMIN", hs_admin_index=300, hs_admin_permissions="011111110011",
    ))
