"""A synthetic MLflow store at lab scale, for tests and benchmarks of the result tables.

    python -m cifarzoo.store_scale 20000 --out outputs/scale-20k.db [--experiments 20] [--epochs 200]

The schema is MLflow's own (an empty store is created through `MlflowClient`, which runs MLflow's
migrations); the runs are then inserted with SQL in one transaction, so 20,000 runs take seconds
where MLflow's API would take hours. The runs are shaped as cifarzoo's tracker logs them
(`cifarzoo/task.py`, `tracking.py`, `provenance.py`): params = the flattened config composed by
Hydra for a study's job plus the group choices and `model.num_params`; tags `overrides`,
`config_hash`, `sweep`, `output_dir`, `train_step`, the provenance tags and MLflow's own
`mlflow.*`; per epoch `train_loss`, `train_error`, `lr`, `epoch_time_s`, `images_per_s`,
`test_loss`, `test_error`, `best_test_error`, `best_test_error_epoch`, and `train_time_s` at the
end. A few runs are FAILED (with `failure_reason`), RUNNING (fewer epochs, no `train_time_s`) or
KILLED. Every metric's last value is stored; the per-epoch history only of `--history` (default
test_error, what `analysis plot curves` reads), which keeps a 20,000-run store at ~2 GB.

The configurations: `--experiments` studies of `sweeps/` (spread over the study families) each
give up to `--configs-per-study` of their jobs, composed as `run.py` composes them; each is run
as the study runs it (its own seeds, its experiment) and then varied (`optim.lr`,
`train.batch_size`, `optim.weight_decay`, `train.epochs`) with seeds 1-3, round robin over the
studies, until the store holds N runs. Deterministic for a given `--seed`."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

METRICS_PER_EPOCH = ("train_loss", "train_error", "lr", "epoch_time_s", "images_per_s", "test_loss", "test_error",
                     "best_test_error", "best_test_error_epoch")
VARIATIONS = {
    "optim.lr": ["0.05", "0.1", "0.2", "0.4", "0.8"],
    "train.batch_size": ["64", "128", "256", "512"],
    "optim.weight_decay": ["0.0001", "0.0005", "0.001"],
    "train.epochs": ["100", "200"],
}
PROVENANCE = {"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "cuda": "13.0",
              "cudnn": "91000", "python": "3.12.3", "git_dirty": "false"}
START_MS = 1_767_225_600_000  # 2026-01-01


_TEMPLATE: list[Path] = []  # an empty store made once per process, copied for the next ones


def create_schema(path: Path) -> None:
    """An empty store with MLflow's current schema (MLflow runs its migrations, once per process)."""
    if _TEMPLATE and _TEMPLATE[0].exists():
        shutil.copyfile(_TEMPLATE[0], path)
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    template = Path(tempfile.mkdtemp(prefix="cifarzoo-store-")) / "empty.db"
    shutil.copyfile(path, template)
    _TEMPLATE[:] = [template]


def compose_jobs(experiments: int, per_study: int) -> list[tuple[str, list[str], dict[str, str], list[str]]]:
    """(experiment, overrides without the seed, params, the study's seeds) of the chosen studies' jobs."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from cifarzoo.compose import CONF_DIR
    from cifarzoo.config import choice_name, flatten
    from sweeps.study import load, names

    studies = [load(n) for n in names()]
    step = max(1, len(studies) // max(1, experiments))
    chosen = studies[::step][:experiments]
    jobs = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for study in chosen:
            configs: dict[tuple[str, ...], list[str]] = {}
            for job in study.jobs():
                key = tuple(o for o in job if not o.startswith(("seed=", "tracking.experiment=")))
                configs.setdefault(key, []).extend(o.split("=", 1)[1] for o in job if o.startswith("seed="))
            for overrides, seeds in list(configs.items())[:per_study]:
                cfg = compose(config_name="config", overrides=[*overrides, f"tracking.experiment={study.experiment}"],
                              return_hydra_config=True)
                choices = {k: choice_name(v) for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
                with open_dict(cfg):
                    del cfg["hydra"]
                params = {**flatten(OmegaConf.to_container(cfg, resolve=True)), **choices}
                params["model.num_params"] = str(int(hashlib.sha256(params["model"].encode()).hexdigest()[:6], 16) * 10)
                jobs.append((study.experiment, list(overrides), params, seeds or ["0"]))
    return jobs


def _variants(jobs: list) -> Iterator[tuple[str, list[str], dict[str, str], str]]:
    """The study's own runs first, then the varied configurations with seeds 1-3, round robin."""
    for experiment, overrides, params, seeds in jobs:
        for seed in seeds:
            yield experiment, overrides, params, seed
    grid = list(itertools.product(*VARIATIONS.values()))
    for values in itertools.cycle(grid):
        changes = dict(zip(VARIATIONS, values))
        for experiment, overrides, params, _ in jobs:
            varied = {**params, **changes}
            extra = [f"{k}={v}" for k, v in changes.items() if params.get(k) != v]
            for seed in ("1", "2", "3"):
                yield experiment, overrides + extra, varied, seed


def _config_hash(params: dict[str, str]) -> str:
    text = json.dumps({k: v for k, v in params.items() if k != "seed" and not k.startswith(("tracking.", "data.root"))},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def generate(path: Path, runs: int, experiments: int = 20, per_study: int = 3, epochs: int = 200,
             seed: int = 0, history: tuple[str, ...] = ("test_error",)) -> dict[str, float]:
    """Write a store of `runs` runs at `path` (replaced); returns counts and seconds. Every metric's
    last value is in the store (what tables read); the per-epoch history only of `history` (what
    `plot curves` reads: 10 metrics x 200 epochs x 20,000 runs would be 40 million rows)."""
    started = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    create_schema(path)
    schema_s = time.perf_counter() - started
    jobs = compose_jobs(experiments, per_study)
    compose_s = time.perf_counter() - started - schema_s
    rng = np.random.default_rng(seed)
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA journal_mode=MEMORY")
    names = sorted({j[0] for j in jobs})
    ids = {}
    now = START_MS
    for i, name in enumerate(names, start=1):
        db.execute("INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, "
                   "last_update_time, workspace) VALUES (?, ?, ?, 'active', ?, ?, 'default')",
                   (i, name, f"/store/artifacts/{i}", now, now))
        ids[name] = i
    metric_rows, latest_rows, param_rows, tag_rows, run_rows = [], [], [], [], []
    epoch_steps = np.arange(1, epochs + 1)
    for n, (experiment, overrides, params, run_seed) in enumerate(itertools.islice(_variants(jobs), runs)):
        run_id = hashlib.md5(f"{seed}-{n}".encode()).hexdigest()
        params = {**params, "seed": run_seed}
        chash = _config_hash(params)
        draw = rng.random()
        status = "FINISHED" if draw < 0.95 else "FAILED" if draw < 0.98 else "RUNNING" if draw < 0.99 else "KILLED"
        done = epochs if status == "FINISHED" else int(rng.integers(1, max(2, epochs)))
        base = 3 + 6 * int(chash[:4], 16) / 0xFFFF
        curve = base + 40 * np.exp(-epoch_steps[:done] / (epochs / 6)) + rng.normal(0, 0.15, done)
        epoch_s = 20 + 10 * rng.random()
        start = now + n * 60_000
        end = None if status == "RUNNING" else start + int(done * epoch_s * 1000) + 5000
        name = ",".join([*overrides, f"seed={run_seed}"])[:250]
        run_rows.append((run_id, name, "UNKNOWN", "run.py", "", "lab", status, start, end, "", "active",
                         f"/store/artifacts/{ids[experiment]}/{run_id}/artifacts", ids[experiment]))
        param_rows.extend((k, v, run_id) for k, v in params.items())
        tags = {"overrides": " ".join([*overrides, f"seed={run_seed}"]), "config_hash": chash,
                "sweep": f"multirun/2026-01-{1 + n % 28:02d}/sweep{n // 500}", "output_dir": f"/lab/outputs/{run_id}",
                "train_step": "graph", "train_step_reason": "CUDA and a static step", **PROVENANCE,
                "hostname": f"node{n % 16:02d}", "git_commit": hashlib.sha1(str(n // 1000).encode()).hexdigest(),
                "mlflow.runName": name, "mlflow.user": "lab", "mlflow.source.name": "run.py",
                "mlflow.source.type": "LOCAL"}
        if status == "FAILED":
            tags["failure_reason"] = "Diverged: train loss nan at epoch %d" % done if draw < 0.965 else "CUDA out of memory"
        tag_rows.extend((k, v, run_id) for k, v in tags.items())
        best = np.minimum.accumulate(curve)
        best_epoch = _argmin_accumulate(curve) + 1
        values = {
            "train_loss": curve / 40, "train_error": curve * 0.6, "lr": np.full(done, 0.1),
            "epoch_time_s": np.full(done, epoch_s), "images_per_s": np.full(done, 50000 / epoch_s),
            "test_loss": curve / 30, "test_error": curve, "best_test_error": best, "best_test_error_epoch": best_epoch,
        }
        stamps = start + (np.arange(1, done + 1) * epoch_s * 1000).astype(np.int64)
        for key, series in values.items():
            if key not in history:
                latest_rows.append((key, float(series[-1]), int(stamps[-1]), done, 0, run_id))
                continue
            metric_rows.extend(zip(itertools.repeat(key), series.astype(float).tolist(), stamps.tolist(),
                                   itertools.repeat(run_id), range(1, done + 1), itertools.repeat(0)))
            latest_rows.append((key, float(series[-1]), int(stamps[-1]), done, 0, run_id))
        if status == "FINISHED":
            metric_rows.append(("train_time_s", done * epoch_s, int(end), run_id, done, 0))
            latest_rows.append(("train_time_s", done * epoch_s, int(end), done, 0, run_id))
        if len(metric_rows) > 2_000_000:
            _flush(db, run_rows, param_rows, tag_rows, metric_rows, latest_rows)
    _flush(db, run_rows, param_rows, tag_rows, metric_rows, latest_rows)
    db.commit()
    count = db.execute("SELECT count(*) FROM runs").fetchone()[0]
    db.close()
    return {"runs": count, "experiments": len(names), "configurations": len(jobs), "schema_s": round(schema_s, 1),
            "compose_s": round(compose_s, 1), "seconds": round(time.perf_counter() - started, 1)}


def _argmin_accumulate(values: np.ndarray) -> np.ndarray:
    """The index of the running minimum at each position."""
    index = np.arange(len(values))
    is_new = np.r_[True, values[1:] < np.minimum.accumulate(values)[:-1]]
    return np.maximum.accumulate(np.where(is_new, index, 0))


def _flush(db: sqlite3.Connection, runs: list, params: list, tags: list, metrics: list, latest: list) -> None:
    db.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                   "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", runs)
    db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", params)
    db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tags)
    db.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, ?)",
                   metrics)
    db.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?, ?, ?, ?, ?, ?)",
                   latest)
    for rows in (runs, params, tags, metrics, latest):
        rows.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarzoo.store_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=int, help="how many runs the store holds")
    parser.add_argument("--out", required=True, help="the sqlite file (replaced)")
    parser.add_argument("--experiments", type=int, default=20)
    parser.add_argument("--configs-per-study", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history", default="test_error",
                        help="comma-separated metrics whose per-epoch history is stored (default: test_error; "
                             "'all': every metric)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.epochs < 1 or args.experiments < 1:
        parser.error("runs, --epochs and --experiments must be >= 1")
    summary = generate(Path(args.out), args.runs, args.experiments, args.configs_per_study, args.epochs, args.seed,
                       METRICS_PER_EPOCH if args.history == "all" else tuple(args.history.split(",")))
    print(json.dumps({"store": f"sqlite:///{Path(args.out).resolve()}", **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
