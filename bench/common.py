"""Shared by every benchmark: a result table printed, and saved for `make bench` to gather.

A figure is always printed beside a baseline measured in the same run on the same machine, and their
ratio, because absolute numbers from a shared 2-core machine mean little on their own.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    name: str  # what was measured, e.g. "ArchivesSpace lookup throughput"
    value: float
    unit: str
    baseline_name: str  # what it is compared with, measured in the same run
    baseline_value: float
    higher_is_better: bool = True
    target: str = ""  # the goal, in words, e.g. ">= 0.8 of baseline"

    @property
    def ratio(self) -> float:
        if not self.baseline_value:
            return float("nan")
        return self.value / self.baseline_value


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def threaded_load(client: Callable[[int], tuple[list[float], int]], connections: int) -> dict[str, float]:
    """Run `client(seed)` in `connections` threads at once; each returns its request latencies (seconds) and
    how many of its requests failed. Returns requests/s, p50 and p99 in ms, requests and failures."""
    results: list[tuple[list[float], int]] = []
    lock = threading.Lock()

    def run(seed: int) -> None:
        outcome = client(seed)
        with lock:
            results.append(outcome)

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies = [latency for mine, _ in results for latency in mine]
    return {"rps": len(latencies) / elapsed, "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000, "requests": len(latencies),
            "failed": sum(failed for _, failed in results)}


def mean(samples: list[float]) -> float:
    return statistics.fmean(samples) if samples else float("nan")


def format_table(figures: list[Figure]) -> str:
    header = ("figure", "value", "baseline (same run)", "baseline value", "ratio", "target")
    rows = [(f.name, f"{f.value:,.2f} {f.unit}", f.baseline_name, f"{f.baseline_value:,.2f} {f.unit}",
             f"{f.ratio:.2f}", f.target) for f in figures]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def report(bench: str, figures: list[Figure], *, notes: dict | None = None) -> None:
    """Print the table and save it as bench/results/<bench>.json for `make bench`."""
    print(format_table(figures))
    RESULTS_DIR.mkdir(exist_ok=True)
    payload = {
        "bench": bench,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu",
        "figures": [{**asdict(f), "ratio": f.ratio} for f in figures],
        "notes": notes or {},
    }
    (RESULTS_DIR / f"{bench}.json").write_text(json.dumps(payload, indent=2))
