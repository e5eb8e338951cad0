"""Runs -> configurations: group the finished runs, aggregate the last-epoch metric over seeds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import labels
from analysis.errors import AnalysisError
from analysis.runs import completed, excluded_records, excluded_summary, natural_key, param_name, resolve_key

AGGS = ("median", "mean", "mean_std", "min", "max")

# Where a run ran and what it kept, not what it trained: never a reason for another row.
BOOKKEEPING = {
    "seed", "data.root", "data.download", "train.device", "train.checkpoint_every",
    "train.eval_batch_size", "train.eval_every", "model.num_params",
}
BOOKKEEPING_PREFIXES = ("tracking.", "hydra.")

# Column order of the seeds' tables: what is trained, then how.
_ORDER = ["data", "model", "model.depth", "model.", "aug", "aug.", "optim", "train.batch_size", "optim.lr",
          "sched", "sched.", "train.epochs", "optim.", "train.", "precision"]


def key_rank(key: str) -> tuple[int, str]:
    for i, entry in enumerate(_ORDER):
        if key == entry or (entry.endswith(".") and key.startswith(entry)):
            return (i, key)
    return (len(_ORDER), key)


def is_bookkeeping(key: str) -> bool:
    return key in BOOKKEEPING or key.startswith(BOOKKEEPING_PREFIXES)


def varying_keys(runs: pd.DataFrame) -> list[str]:
    """Params whose values differ across the runs, except bookkeeping; a key under a group
    (`sched.milestones`) counts only when it varies within one choice of the group (`sched`):
    otherwise the choice already tells the rows apart."""
    columns = [c for c in runs.columns if c.startswith("params.") and not is_bookkeeping(param_name(c))]
    values = runs[columns].fillna("").astype(str)
    keys = []
    for column in columns:
        if values[column].nunique() <= 1:
            continue
        name = param_name(column)
        group = f"params.{name.split('.')[0]}"
        if "." in name and group in values.columns:
            if values.groupby(group)[column].nunique().max() <= 1:
                continue
        keys.append(name)
    return sorted(keys, key=key_rank)


def typical_runs(counts: Sequence[int]) -> int:
    """The run count of the header ("median of 3 runs"): the most common one, the larger on ties."""
    if not counts:
        return 0
    tally = Counter(counts)
    return max(tally, key=lambda n: (tally[n], n))


def aggregate(
    runs: pd.DataFrame,
    rows: Sequence[str] | None = None,
    agg: str = "median",
    metric: str = "test_error",
    include: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per configuration of the finished runs.

    Configurations are told apart by `rows` (param keys), or by default by the params that
    vary (`varying_keys`), plus `include`. Columns: the keys (raw param values, "" when a run
    lacks the param), `label` (the seeds' model name), `runs`, the metric aggregated by `agg`
    and its `_std` / `_min` / `_max`, `train_time_s` (median), `run_ids` and `params` (the first
    run's params, for labels of other groupings such as a plot's lines). `attrs` hold the keys,
    the keys shown as columns (`columns`: those the label does not already say), `agg`, `metric`,
    `runs_per_row`, the runs left out (`excluded`, `excluded_runs`) and where the runs come from
    (`experiments`, `datasets`: the `data` choices)."""
    if agg not in AGGS:
        raise AnalysisError(f"--agg: must be one of {', '.join(AGGS)} (got {agg!r})")
    done = runs[completed(runs, metric)] if not runs.empty else runs
    if rows:
        keys = [param_name(resolve_key(runs, k, "--rows")) for k in rows]
    else:
        keys = varying_keys(done)
    for key in include:
        name = param_name(resolve_key(runs, key, "--pivot" if not rows else "--rows"))
        if name not in keys:
            keys.append(name)
    keys = list(dict.fromkeys(keys if rows else sorted(keys, key=key_rank)))

    params = [c for c in done.columns if c.startswith("params.")]
    params += [_column(k) for k in keys if _column(k) in done.columns and _column(k) not in params]  # tags
    records = []
    coverage: list[set[str]] = []
    if not done.empty:
        values = done[params].fillna("").astype(str)
        group_columns = [_column(k) for k in keys if _column(k) in values.columns]
        # keys no finished run has are kept as empty columns
        grouped = values.groupby(group_columns, sort=False) if group_columns else [((), values)]
        for _, members in grouped:
            picked = done.loc[members.index]
            errors = picked[f"metrics.{metric}"].astype(float).to_numpy()
            times = picked["metrics.train_time_s"].dropna().astype(float) if "metrics.train_time_s" in picked else []
            texts, covered = set(), None
            for row in members.to_dict("records"):
                text, keys_used = labels.label({param_name(k): v for k, v in row.items()})
                texts.add(text)
                covered = keys_used if covered is None else covered & keys_used
            first = members.iloc[0]
            record = {k: str(first.get(_column(k), "")) for k in keys}
            record.update({
                "label": " / ".join(sorted(texts)),
                "runs": len(errors),
                metric: _aggregate(errors, agg),
                f"{metric}_std": float(np.std(errors, ddof=1)) if len(errors) > 1 else float("nan"),
                f"{metric}_min": float(errors.min()),
                f"{metric}_max": float(errors.max()),
                "train_time_s": float(np.median(times)) if len(times) else float("nan"),
                "run_ids": list(picked["run_id"]),
                "params": {param_name(k): v for k, v in members.iloc[0].items()},
            })
            records.append(record)
            coverage.append(covered or set())
    order = sorted(range(len(records)), key=lambda i: [natural_key(records[i][k]) for k in keys])
    configs = pd.DataFrame([records[i] for i in order], columns=[
        *keys, "label", "runs", metric, f"{metric}_std", f"{metric}_min", f"{metric}_max", "train_time_s", "run_ids", "params"])
    configs.attrs.update({
        "keys": keys,
        "columns": [k for k in keys if not _covered(k, configs, [coverage[i] for i in order])],
        "agg": agg,
        "metric": metric,
        "runs_per_row": typical_runs(list(configs["runs"])),
        "excluded": excluded_summary(runs, metric) if not runs.empty else "",
        "excluded_runs": excluded_records(runs, metric) if not runs.empty else [],
        "experiments": _distinct(done, "experiment"),
        "datasets": _distinct(done, "params.data"),
    })
    return configs


def _distinct(runs: pd.DataFrame, column: str) -> list[str]:
    return sorted({str(v) for v in runs[column].dropna()}, key=natural_key) if column in runs.columns else []


def _column(key: str) -> str:
    return key if key.startswith("tags.") else f"params.{key}"


def _covered(key: str, configs: pd.DataFrame, coverage: list[set[str]]) -> bool:
    """Every configuration that has the param says it in its label already."""
    return all(key in covered or value == "" for value, covered in zip(configs[key], coverage))


def _aggregate(values: np.ndarray, agg: str) -> float:
    if agg in ("mean", "mean_std"):
        return float(np.mean(values))
    return float({"median": np.median, "min": np.min, "max": np.max}[agg](values))


@dataclass
class Grid:
    """One pivot table: the configurations that share every key but the two axes."""

    fixed: list[tuple[str, str]]  # (key, value) of the other shown keys
    label: str | None  # the model label, when one for the whole grid
    row_values: list[str]
    col_values: list[str]
    cells: dict[tuple[str, str], pd.Series] = field(default_factory=dict)


def pivot(configs: pd.DataFrame, row_key: str, col_key: str) -> list[Grid]:
    """Grids of `configs` (from `aggregate(..., include=[row_key, col_key])`), one per
    combination of the other keys, rows = values of `row_key`, columns = values of `col_key`."""
    keys = configs.attrs["keys"]
    for key in (row_key, col_key):
        if key not in keys:
            raise AnalysisError(f"--pivot: {key!r} is not a key of the configurations ({', '.join(keys)})")
    if row_key == col_key:
        raise AnalysisError("--pivot: the row and column keys must differ")
    others = [k for k in keys if k not in (row_key, col_key)]
    shown = [k for k in others if k in configs.attrs["columns"]]
    grids = []
    groups = configs.groupby(others, sort=False) if others else [((), configs)]
    for _, members in groups:
        first = members.iloc[0]
        grid_labels = set(members["label"])
        grid = Grid(
            fixed=[(k, first[k]) for k in shown],
            label=grid_labels.pop() if len(grid_labels) == 1 else None,
            row_values=sorted(set(members[row_key]), key=natural_key),
            col_values=sorted(set(members[col_key]), key=natural_key),
        )
        for _, config in members.iterrows():
            grid.cells[(config[row_key], config[col_key])] = config
        grids.append(grid)
    return grids
