"""`make bench`: run every benchmark in bench/ and print one table of all their figures.

Each benchmark is a module of this package with a `__main__` block, run as `python -m bench.<name>` with
its defaults; it saves its figures through bench.common.report() into bench/results/<name>.json. The
table shows each figure beside its baseline measured in the same run, their ratio, the target, and
whether the target is met. A benchmark that fails, or writes no results, is listed with its exit
status and the end of its output, and makes this command exit non-zero.

    .venv/bin/python -m bench.run_all                      # all of them
    .venv/bin/python -m bench.run_all queue_push api_lookup  # some of them
    (queue_push_real: bench.queue_push --real-server, listed where HANDLES_REAL_SERVER_DIST or
    ../shared/real-handle-server holds the real Handle server)
    BENCH_TIMEOUT=7200 .venv/bin/python -m bench.run_all   # seconds allowed per benchmark (default 3600)

The table is also saved as bench/results/summary.md, for the README's "Performance" section.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
TAIL_LINES = 15
TARGET = re.compile(r"^\s*(>=|<=|>|<)\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*(.*?)\s*$")


@dataclass
class Run:
    name: str
    status: int | None  # exit status; None: stopped at the time limit
    seconds: float
    output_tail: str
    figures: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == 0 and bool(self.figures)


def benchmarks() -> list[str]:
    """Every module of bench/ that runs as a script (has a `__main__` block), this one excepted."""
    names = []
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.stem != "run_all" and re.search(r"^if __name__ == .__main__.:", path.read_text(), re.M):
            names.append(path.stem)
    return names


def variants() -> dict[str, list[str]]:
    """Benchmarks run a second time with arguments: name -> the module and its arguments. The queue against
    a real HANDLE.NET server runs only where the shared server's folder is (HANDLES_REAL_SERVER_DIST)."""
    from bench.queue_push import real_server_dist

    return {"queue_push_real": ["queue_push", "--real-server"]} if real_server_dist() else {}


def run_one(name: str, timeout: float) -> Run:
    RESULTS_DIR.mkdir(exist_ok=True)
    results = RESULTS_DIR / f"{name}.json"
    log_path = RESULTS_DIR / f"{name}.log"
    started = time.time()
    print(f"--- bench.{name} (output: {log_path.relative_to(ROOT)})", flush=True)
    with open(log_path, "w") as log:
        # Its own process group: at the time limit its simulator and worker processes are stopped too.
        module, *arguments = variants().get(name) or [name]
        process = subprocess.Popen([sys.executable, "-m", f"bench.{module}", *arguments], cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            status: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    seconds = time.time() - started
    lines = log_path.read_text(errors="replace").splitlines()
    run = Run(name, status, seconds, "\n".join(lines[-TAIL_LINES:]))
    # Only results written by this run count: an old file would show figures that were not measured now.
    if results.exists() and results.stat().st_mtime >= started:
        run.figures = json.loads(results.read_text()).get("figures", [])
    return run


def target_met(figure: dict) -> str:
    """yes/no for targets such as ">= 0.8 of baseline", "< 20 ms", "<= 2x"; blank when not comparable."""
    match = TARGET.match(figure.get("target") or "")
    if not match:
        return ""
    op, number, rest = match.groups()
    limit = float(number.replace(",", "").replace("_", ""))
    if rest in ("of baseline", "x", "x baseline", "× baseline", "×"):
        measured = figure.get("ratio")
    elif rest == figure.get("unit"):
        measured = figure.get("value")
    else:
        return ""
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return ""
    passed = {">=": measured >= limit, "<=": measured <= limit, ">": measured > limit, "<": measured < limit}[op]
    return "yes" if passed else "no"


def number(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.2f} {unit}".strip()


def table(runs: list[Run]) -> str:
    header = ("bench", "figure", "value", "baseline (same run)", "baseline value", "ratio", "target", "met")
    rows = []
    for run in runs:
        for f in run.figures:
            ratio = f.get("ratio")
            rows.append((run.name, f["name"], number(f["value"], f["unit"]), f["baseline_name"],
                         number(f["baseline_value"], f["unit"]),
                         "-" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}", f.get("target", ""),
                         target_met(f)))
        if not run.ok:
            status = "timed out" if run.status is None else f"exit status {run.status}"
            why = status if run.status != 0 else "exit status 0 but no results written"
            rows.append((run.name, f"FAILED: {why}", "", "", "", "", "", ""))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: tuple) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args()
    available = benchmarks()
    for name, (module, *_) in variants().items():
        available.insert(available.index(module) + 1, name)
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}; there are: {', '.join(available)}")
    timeout = float(os.environ.get("BENCH_TIMEOUT", "3600"))
    runs = [run_one(name, timeout) for name in (args.names or available)]

    summary = table(runs)
    command = "make bench" if not args.names else f"python -m bench.run_all {' '.join(args.names)}"
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    machine = f"{os.cpu_count()} cpu"
    print()
    print(summary)
    for run in runs:
        print(f"\nbench.{run.name}: {run.seconds:.0f} s", end="")
        if not run.ok:
            print(f", exit status {run.status if run.status is not None else 'none (timed out)'}; "
                  f"last lines of its output:\n{run.output_tail}", end="")
    print()
    (RESULTS_DIR / "summary.md").write_text(f"Measured {when} on {machine} with `{command}`:\n\n{summary}\n")
    return 0 if all(run.ok for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
