"""`make test` preflight: the suite runs on real services. Start what is down, or fail in one line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

START_COMMANDS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main start",
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no",
}


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _ensure(name: str, host: str, port: int) -> str | None:
    if _listening(host, port):
        return None
    command = START_COMMANDS[name]
    if shutil.which(command.split()[0]):
        subprocess.run(command, shell=True, capture_output=True, timeout=60)
        for _ in range(50):
            if _listening(host, port):
                return None
            time.sleep(0.2)
    return f"{name} is not reachable at {host}:{port} and could not be started ({command})"


def _postgres_login() -> str | None:
    import psycopg

    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", connect_timeout=5).close()
    except psycopg.Error as exc:
        return f"PostgreSQL refused the test login ({str(exc).strip().splitlines()[0]})"
    return None


def main() -> int:
    problems = [p for p in (
        _ensure("PostgreSQL", "127.0.0.1", 5432),
        _ensure("Redis", "127.0.0.1", 6379),
    ) if p]
    if not problems:
        problems = [p for p in [_postgres_login()] if p]
    if os.environ.get("HANDLES_BROWSER_TESTS", "1") != "0" and not os.path.exists("/usr/bin/chromium"):
        subprocess.run("apt-get install -y -q chromium >/dev/null 2>&1 || "
                       "(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)",
                       shell=True, timeout=900)
        if not os.path.exists("/usr/bin/chromium"):
            problems.append("Chromium is not installed at /usr/bin/chromium (apt-get install chromium failed)")
    for problem in problems:
        print(f"make test: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
