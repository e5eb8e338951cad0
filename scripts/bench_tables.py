"""Result tables at lab scale, old code beside new in one run: each command runs as its own process
from the old tree and from this one, on the same generated store, one after the other.

    python -m cifarzoo.store_scale 20000 --out /tmp/scale/20k.db
    git archive <old commit> | tar -x -C /tmp/old
    PYTHONPATH=. python scripts/bench_tables.py --old /tmp/old /tmp/scale/1k.db /tmp/scale/20k.db [--json out.json]

Per store and command: wall seconds and peak RSS (the process's own, from wait4) of old and new,
their ratio, and whether both wrote the same output file. The new tree is timed with an empty
cache (cold: the cache folder emptied first) and again with the cache it left (warm); the old tree has no cache.
The skip decision (`cifarzoo.sweep.decide`, what every job of a multirun asks the store first) is
timed in-process for 12 of the store's configurations, the first call apart."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

NEW = Path(__file__).resolve().parent.parent


def timed(command: list[str], cwd: Path, env: dict[str, str], limit_s: float = 1e9) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit status) of one process; stopped after `limit_s` (status -9)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env={**env, "PYTHONPATH": str(cwd)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    timer = threading.Timer(limit_s, child.kill)
    timer.start()
    _, status, usage = os.wait4(child.pid, 0)
    timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode:
        print(f"  {cwd.name}: {' '.join(command[2:])} exited {child.returncode}: "
              f"{child.stderr.read().decode()[-300:]}", file=sys.stderr)
    return seconds, usage.ru_maxrss / 1024, child.returncode


def cases(uri: str, experiment: str, study: str, out: str) -> dict[str, list[str]]:
    py = [sys.executable, "-m"]
    return {
        "analysis table, one experiment": [*py, "analysis", "table", "--tracking-uri", uri, "--experiment", experiment,
                                           "--out", f"{out}.one.md"],
        "analysis table, all experiments": [*py, "analysis", "table", "--tracking-uri", uri, "--experiment", "*",
                                            "--out", f"{out}.all.md"],
        "analysis plot curves, one experiment": [*py, "analysis", "plot", "curves", "--tracking-uri", uri,
                                                 "--experiment", experiment, "--out", f"{out}.curves.png"],
        "sweeps table": [*py, "sweeps", "table", study, f"tracking.uri={uri}", "--out", f"{out}.study.md"],
        "sweeps report": [*py, "sweeps", "report", f"tracking.uri={uri}", "--out", f"{out}.report.md"],
    }


def skip_decision(tree: Path, uri: str, env: dict[str, str]) -> dict[str, float]:
    """First call and the median of the next 11 calls of `decide`, in one process of `tree`."""
    code = f"""
import json, sqlite3, statistics, time
from mlflow.tracking import MlflowClient
from cifarzoo.sweep import decide
db = sqlite3.connect({uri[len('sqlite:///'):]!r})
jobs = db.execute("SELECT e.name, t.value, p.value FROM runs r JOIN experiments e USING (experiment_id) "
                  "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'config_hash' "
                  "JOIN params p ON p.run_uuid = r.run_uuid AND p.key = 'seed' ORDER BY r.run_uuid LIMIT 12").fetchall()
client = MlflowClient({uri!r})
seconds = []
for name, chash, seed in jobs:
    t = time.perf_counter(); decide(client, name, chash, int(seed), False); seconds.append(time.perf_counter() - t)
print(json.dumps({{"first_s": seconds[0], "next_median_s": statistics.median(seconds[1:])}}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, env={**env, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(results: list[dict], runs: list[int]) -> str:
    """The BENCHMARKS.md table: per command and store old / new cold / new warm, and the growth per
    1,000 runs between the smallest and the largest store."""
    names = [n for n in results[0] if n not in ("store", "skip decision")]
    head = ["command", *(f"{n:,} runs: old / cold / warm" for n in runs), "per 1,000 runs: old / warm",
            f"{runs[-1]:,} runs: old / warm"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def sec(row: dict, key: str) -> str:
        return f">{row[key]:.0f} s (stopped)" if row.get("failed") and key == "old_s" else f"{row[key]:.1f} s"

    for name in names:
        cells = [f"{sec(r[name], 'old_s')} / {r[name]['cold_s']:.1f} s / {r[name]['warm_s']:.1f} s" for r in results]
        first, last = results[0][name], results[-1][name]
        span = (runs[-1] - runs[0]) / 1000
        stopped = ">" if last.get("failed") else ""
        growth = (f"{stopped}{(last['old_s'] - first['old_s']) / span:.2f} s / "
                  f"{(last['warm_s'] - first['warm_s']) / span:.3f} s" if span else "-")
        memory = f"{stopped}{last['old_mb']:.0f} MB / {last['warm_mb']:.0f} MB"
        lines.append(f"| {name} | " + " | ".join([*cells, growth, memory]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stores", nargs="+", help="sqlite files made by `python -m cifarzoo.store_scale`")
    parser.add_argument("--old", required=True, type=Path, help="a copy of the old code (git archive of a commit)")
    parser.add_argument("--study", default="h000_mnist", help="the study of `sweeps table` (default: %(default)s)")
    parser.add_argument("--skip", action="append", default=[], help="leave out cases whose name contains this")
    parser.add_argument("--old-limit", type=float, default=1e9, help="stop an old-tree command after this many seconds")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        env["CIFARZOO_CACHE_DIR"] = f"{tmp}/cache"
        for store in args.stores:
            uri = f"sqlite:///{Path(store).resolve()}"
            from sweeps.study import load

            study = load(args.study)
            row = {"store": store}
            for name, command in cases(uri, study.experiment, args.study, f"{tmp}/OUT").items():
                if any(s in name for s in args.skip):
                    continue
                old = timed([c.replace("OUT", "old") for c in command], args.old, env, args.old_limit)
                shutil.rmtree(env["CIFARZOO_CACHE_DIR"], ignore_errors=True)
                cold = timed([c.replace("OUT", "new") for c in command], NEW, env)
                warm = timed([c.replace("OUT", "new") for c in command], NEW, env)
                outputs = [Path(c.replace("OUT", side)) for side in ("old", "new") for c in command[-1:]]
                same = (outputs[0].suffix != ".png" and all(p.exists() for p in outputs)
                        and outputs[0].read_bytes() == outputs[1].read_bytes())
                row[name] = {"old_s": old[0], "old_mb": old[1], "cold_s": cold[0], "cold_mb": cold[1],
                             "warm_s": warm[0], "warm_mb": warm[1], "same_output": same,
                             "failed": bool(old[2] or cold[2] or warm[2])}
                print(f"{store} | {name}: old {old[0]:.1f}s {old[1]:.0f}MB, new cold {cold[0]:.1f}s {cold[1]:.0f}MB, "
                      f"warm {warm[0]:.1f}s {warm[1]:.0f}MB, x{old[0] / warm[0]:.1f}, same output: {same}",
                      flush=True)
            if not any("skip" in s for s in args.skip):
                row["skip decision"] = {"old": skip_decision(args.old, uri, env), "new": skip_decision(NEW, uri, env)}
                print(f"{store} | skip decision: {row['skip decision']}", flush=True)
            results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if len(results) > 1 and not args.skip:
        import sqlite3

        counts = [sqlite3.connect(r["store"]).execute("SELECT count(*) FROM runs").fetchone()[0] for r in results]
        print(markdown(results, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
