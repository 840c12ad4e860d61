"""The fault switch: `faults.json` in the data dir makes a running simulator slow, busy, unreachable or
shutting down (`manage.py handle_simulator_fault`)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from handles.simulator.datadir import FAULTS_FILE, write_atomically

FAULT_MODES = ("ok", "slow", "503", "drop", "down", "shutdown",
               "nolist")  # nolist: as a server whose config.dct says "allow_list_hdls" = "no"


@dataclass(frozen=True, slots=True)
class Fault:
    """ok; slow (sleep `delay` s before answering); 503 (answer rc 3 "Server too busy"); drop (read the
    request, close without answering); down (close each new connection at once, and kept-alive ones at
    their next request); shutdown (the real server's last seconds after SIGTERM: every request that
    authenticates gets 401, with an empty body for a handle request, and a challenge naming the exception
    it met verifying the identity; reads without credentials are answered); nolist (listing handles refused
    with rc 5, as `allow_list_hdls = no` does). `until` (unix time) switches the fault off by itself."""

    mode: str = "ok"
    delay: float = 0.0
    until: float | None = None


_NO_FAULT = Fault()


def write_faults(data_dir: str | Path, mode: str, delay: float | None = None, duration: float | None = None) -> Fault:
    """Switch a (running or not) simulator's fault mode by rewriting `faults.json` atomically."""
    if mode not in FAULT_MODES:
        raise ValueError(f"unknown fault mode {mode!r}; choose from {', '.join(FAULT_MODES)}")
    if delay is not None and delay < 0 or duration is not None and duration <= 0:
        raise ValueError("delay must be >= 0 and duration > 0 seconds")
    if mode == "slow" and not delay:
        raise ValueError("the slow mode needs a delay in seconds")
    fault = Fault(mode, float(delay or 0), time.time() + duration if duration else None)
    payload = {"mode": fault.mode, "delay": fault.delay, "until": fault.until}
    write_atomically(Path(data_dir) / FAULTS_FILE, json.dumps(payload).encode())
    return fault


def clear_faults(data_dir: str | Path) -> None:
    write_faults(data_dir, "ok")


class FaultSwitch:
    """Reads faults.json again only when its (mtime, inode, size) changes: one stat() per request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cached: tuple[tuple[int, int, int] | None, Fault] = (None, _NO_FAULT)

    def current(self) -> Fault:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return _NO_FAULT
        signature, fault = self._cached
        if (st.st_mtime_ns, st.st_ino, st.st_size) != signature:
            try:
                raw = json.loads(self.path.read_bytes())
                fault = Fault(raw.get("mode", "ok"), float(raw.get("delay") or 0), raw.get("until"))
            except (OSError, ValueError, AttributeError):
                return fault  # half-written or broken: keep the last good switch, retry next request
            self._cached = ((st.st_mtime_ns, st.st_ino, st.st_size), fault)
        if fault.until is not None and time.time() >= fault.until:
            return _NO_FAULT
        return fault
