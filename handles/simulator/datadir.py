"""The simulator's data dir: the names of its files, and how they are written."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DB_FILE = "handles.sqlite3"
CERT_FILE = "serverCertificate.pem"  # the real server's file name (docs/handle-server.md §3)
KEY_FILE = "serverCertificatePrivateKey.pem"  # PEM here; the real server writes a Handle-format .bin
FAULTS_FILE = "faults.json"
CLIENT_CERT_DIR = "clientcerts"


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
