"""Runs from an MLflow store into one pandas DataFrame: one paginated `search_runs`, no
per-run calls. Columns follow `mlflow.search_runs`: `run_id`, `experiment`, `status`,
`start_time`, `end_time`, `run_name`, then `params.<key>`, `metrics.<key>` (each metric's value at
its last step, i.e. the last epoch) and `tags.<key>`."""

from __future__ import annotations

import difflib
import fnmatch
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from analysis.errors import AnalysisError
from cifarzoo.paths import DEFAULT_EXPERIMENT

PAGE = 10_000
FAILED, FINISHED = "FAILED", "FINISHED"


def open_client(tracking_uri: str):  # noqa: ANN201 (mlflow is imported lazily: it is slow)
    from mlflow.tracking import MlflowClient

    from cifarzoo.errors import ConfigError
    from cifarzoo.tracking import check_reachable

    try:  # an unknown scheme, or an http server that does not answer: one line within seconds
        check_reachable(tracking_uri)
    except ConfigError as error:
        raise AnalysisError(f"--tracking-uri: {str(error)[len(error.key) + 2:]}") from None
    if tracking_uri.startswith("sqlite:///"):
        # MlflowClient would create an empty store at a mistyped path: refuse instead.
        path = Path(tracking_uri[len("sqlite:///"):].split("?")[0])
        if not path.is_file():
            raise AnalysisError(f"--tracking-uri: no MLflow store at {path}")
    return MlflowClient(tracking_uri=tracking_uri)


def active_experiments(tracking_uri: str, api: bool = False) -> dict[str, str]:
    """Name -> id of the store's active experiments: by SQL for a sqlite store (no MLflow import,
    which alone takes seconds), else through MLflow's API (also with `api=True`)."""
    if tracking_uri.startswith("sqlite:///") and not api:
        from analysis import runcache

        path = runcache.sqlite_file(tracking_uri)
        if not path.is_file():  # MLflow would create an empty store at a mistyped path: refuse instead
            raise AnalysisError(f"--tracking-uri: no MLflow store at {path}")
        return runcache.experiments(path)
    from mlflow.entities import ViewType

    return {e.name: e.experiment_id for e in open_client(tracking_uri).search_experiments(view_type=ViewType.ACTIVE_ONLY)}


def select_experiments(names: dict[str, str], patterns: Sequence[str]) -> dict[str, str]:
    """Experiment id -> name for the names or globs given (`names`: name -> id of the store's)."""
    chosen: dict[str, str] = {}
    for pattern in patterns:
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            known = ", ".join(sorted(names)) or "none"
            raise AnalysisError(f"--experiment: no experiment matches {pattern!r} (experiments: {known})")
        chosen.update({names[n]: n for n in sorted(matched)})
    return chosen


def load_runs(
    tracking_uri: str | None = None,
    experiments: Sequence[str] | None = None,
    where: Iterable[str] | dict[str, str] = (),
    progress: bool = False,
    cache: bool = True,
    api: bool = False,
) -> pd.DataFrame:
    """All active training runs of the experiments (names or globs; default: cifarzoo's, `DEFAULT_EXPERIMENT`),
    filtered by `where` on params (LR range tests, tag `kind=lr_find`, are left out). A sqlite store is
    read with SQL through the incremental cache of `analysis.runcache` (`cache=False`: SQL only, the
    cache neither read nor written); other stores, and any store with `api=True`, through MLflow's
    `search_runs` (the reference the SQL path is tested against)."""
    if tracking_uri is None:
        from cifarzoo.paths import default_tracking_uri

        tracking_uri = default_tracking_uri()
    if experiments is None:
        experiments = [DEFAULT_EXPERIMENT]
    if isinstance(experiments, str):
        experiments = [experiments]
    chosen = select_experiments(active_experiments(tracking_uri, api), experiments)
    if tracking_uri.startswith("sqlite:///") and not api:
        from analysis import runcache

        df = runcache.read_sqlite(tracking_uri, chosen, use_cache=cache)
    else:
        df = _search(open_client(tracking_uri), chosen, progress)
    return _shape(df, tracking_uri, chosen, where)


def _search(client, chosen: dict[str, str], progress: bool) -> pd.DataFrame:  # noqa: ANN001
    """The runs through MLflow's API, one paginated `search_runs`."""
    started, records, token = time.monotonic(), [], None
    while True:
        page = client.search_runs(list(chosen), max_results=PAGE, order_by=["attributes.start_time ASC"],
                                  page_token=token)
        records.extend(_record(run, chosen) for run in page)
        token = page.token
        if progress and (token or records and time.monotonic() - started > 2):
            print(f"analysis: read {len(records)} runs", file=sys.stderr, flush=True)
        if not token:
            break
    return pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=_BASE)


def _shape(df: pd.DataFrame, tracking_uri: str, chosen: dict[str, str], where: Iterable[str] | dict[str, str]) -> pd.DataFrame:
    if "tags.kind" in df.columns:  # `python -m cifarzoo.lr_find` runs are no training runs
        df = df[df["tags.kind"] != "lr_find"]
        df = df[[c for c in df.columns if c in _BASE or df[c].notna().any()]]  # without their own columns
    first = [c for c in _BASE if c in df.columns]
    rest = sorted(c for c in df.columns if c not in _BASE)
    df = df[first + rest]
    for column in ("start_time", "end_time"):
        df[column] = pd.to_datetime(df[column], unit="ms", utc=True)
    df.attrs["tracking_uri"] = tracking_uri
    df.attrs["experiments"] = list(chosen.values())
    return filter_runs(df, where)


BASE = _BASE = ["run_id", "experiment", "status", "start_time", "end_time", "run_name"]


def _record(run, experiments: dict[str, str]) -> dict[str, object]:  # noqa: ANN001
    info, data = run.info, run.data
    record: dict[str, object] = {
        "run_id": info.run_id,
        "experiment": experiments.get(info.experiment_id, info.experiment_id),
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "run_name": info.run_name,
    }
    record.update({f"params.{k}": v for k, v in data.params.items()})
    record.update({f"metrics.{k}": v for k, v in data.metrics.items()})
    record.update({f"tags.{k}": v for k, v in data.tags.items() if not k.startswith("mlflow.")})
    return record


def rows_of(frame: pd.DataFrame) -> list[dict[str, object]]:
    """The rows as dicts, column by column: iterrows / to_dict make a Series per row, and each
    deep-copies the frame's attrs (the excluded runs: seconds at 20,000 runs)."""
    plain = frame.copy(deep=False)
    plain.attrs = {}
    columns = list(plain.columns)
    return [dict(zip(columns, values)) for values in zip(*(plain[c].tolist() for c in columns))]


def resolve_key(df: pd.DataFrame, key: str, option: str = "key") -> str:
    """The column of a param given as `optim.lr`, `params.optim.lr`, `tags.sweep` or a unique
    last part (`lr`); a one-line error naming close matches otherwise."""
    if key in df.columns and key.startswith(("params.", "tags.", "metrics.")):
        return key
    if f"params.{key}" in df.columns:
        return f"params.{key}"
    params = [c[len("params."):] for c in df.columns if c.startswith("params.")]
    tail = [p for p in params if p.endswith("." + key)]
    if len(tail) == 1:
        return f"params.{tail[0]}"
    if len(tail) > 1:
        raise AnalysisError(f"{option}: {key!r} is ambiguous ({', '.join(sorted(tail))})")
    close = difflib.get_close_matches(key, params, n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise AnalysisError(f"{option}: no selected run has a param {key!r}{hint}")


def param_name(column: str) -> str:
    return column[len("params."):] if column.startswith("params.") else column


def _matches(values: pd.Series, wanted: str) -> pd.Series:
    text = values.fillna("").astype(str)
    if any(ch in wanted for ch in "*?["):
        return text.map(lambda v: fnmatch.fnmatchcase(v, wanted))
    try:
        number = float(wanted)
    except ValueError:
        return text == wanted
    # 0.10 matches the logged 0.1, 5e-4 the logged 0.0005
    return pd.to_numeric(text, errors="coerce").eq(number) | (text == wanted)


def filter_runs(df: pd.DataFrame, where: Iterable[str] | dict[str, str]) -> pd.DataFrame:
    """Keep runs whose params equal every `KEY=VALUE` (numbers compare as numbers, `*?[]` globs)."""
    clauses = [(k, str(v)) for k, v in where.items()] if isinstance(where, dict) else [_split(w) for w in where]
    if not clauses or df.empty:
        return df
    mask = pd.Series(True, index=df.index)
    for key, value in clauses:
        column = resolve_key(df, key, "--where")
        hit = _matches(df[column], value)
        if not hit.any():
            seen = sorted(df[column].dropna().astype(str).unique(), key=natural_key)
            shown = ", ".join(seen[:12]) + (", ..." if len(seen) > 12 else "")
            raise AnalysisError(f"--where {key}={value}: no run has that value (values: {shown})")
        mask &= hit
    if not mask.any():
        raise AnalysisError(f"--where {' '.join(f'{k}={v}' for k, v in clauses)}: no run matches all of them")
    return df[mask]


def _split(clause: str) -> tuple[str, str]:
    key, sep, value = clause.partition("=")
    if not sep or not key:
        raise AnalysisError(f"--where: expected KEY=VALUE (got {clause!r})")
    return key.strip(), value.strip()


def natural_key(value: object) -> tuple[int, float, str]:
    """Numbers in numeric order, then text, then missing values."""
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    if text in ("", "None", "nan"):
        return (2, 0.0, "")
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text.lower())


def completed(df: pd.DataFrame, metric: str = "test_error") -> pd.Series:
    """FINISHED runs that logged the metric: the only ones that enter aggregates."""
    column = f"metrics.{metric}"
    has_metric = df[column].notna() if column in df.columns else pd.Series(False, index=df.index)
    return (df["status"] == FINISHED) & has_metric


def excluded_summary(df: pd.DataFrame, metric: str = "test_error") -> str:
    """"excluded: 2 runs — 1 failed (diverged), 1 running"; empty when nothing is excluded."""
    out = df[~completed(df, metric)]
    if out.empty:
        return ""
    parts = []
    failed = out[out["status"] == FAILED]
    if not failed.empty:
        reasons = failed.get("tags.failure_reason", pd.Series("", index=failed.index)).map(_reason)
        for reason, count in sorted(reasons.value_counts().items(), key=lambda rc: (-rc[1], rc[0])):
            parts.append(f"{count} failed ({reason})" if reason else f"{count} failed")
    for status, word in (("KILLED", "killed"), ("RUNNING", "running"), ("SCHEDULED", "scheduled")):
        count = int((out["status"] == status).sum())
        if count:
            parts.append(f"{count} {word}")
    count = int((out["status"] == FINISHED).sum())
    if count:
        parts.append(f"{count} finished without {metric}")
    total = len(out)
    return f"excluded: {total} run{'s' if total != 1 else ''} — {', '.join(parts)}"


def excluded_records(df: pd.DataFrame, metric: str = "test_error") -> list[dict[str, object]]:
    columns = ["run_id", "experiment", "run_name", "status", "tags.failure_reason"]
    out = df.loc[~completed(df, metric), [c for c in columns if c in df.columns]]
    reasons = out.get("tags.failure_reason", pd.Series("", index=out.index))
    return [
        {"run_id": r.run_id, "experiment": r.experiment, "run_name": r.run_name, "status": r.status,
         "reason": _reason(reason) or None}
        for r, reason in zip(out.itertuples(), reasons)
    ]


def _reason(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        return ""
    line = text.strip().splitlines()[0]
    return line if len(line) <= 60 else line[:57] + "..."


def unvouched(df: pd.DataFrame) -> str:
    """One line naming the runs no cifarzoo run dir vouches for (no `output_dir` tag: created
    outside cifarzoo; or a dir on this machine whose `mlflow_run.json` names another run): anyone
    who can write the store can add such runs (README, Trust model). Empty when there are none."""
    from cifarzoo.runrecord import vouches_for

    tagged = df.get("tags.output_dir", pd.Series(None, index=df.index, dtype=object))
    outside, forged = [], []
    for run_id, directory in zip(df["run_id"], tagged):
        if not isinstance(directory, str) or not directory:
            outside.append(run_id)
        elif Path(directory).is_dir() and not vouches_for(Path(directory), run_id):
            forged.append(run_id)
    parts = [f"{len(ids)} {what} ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
             for ids, what in ((outside, "with no run dir, created outside cifarzoo"),
                               (forged, "whose run dir does not record them")) if ids]
    return f"analysis: note: included runs no cifarzoo run dir vouches for: {'; '.join(parts)}" if parts else ""

