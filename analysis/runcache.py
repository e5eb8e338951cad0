"""The fast path of `load_runs` for sqlite stores: MLflow's own tables read with SQL into one wide
frame, and an incremental Parquet cache of it, refreshed only for the runs that changed.

The frame is what `mlflow.search_runs` gives (active runs only; each metric's latest value as
MLflow's `latest_metrics` keeps it; `mlflow.*` tags left out), in search_runs' order (start time,
then run id); `tests/test_analysis_scale.py` pins it equal to the API's.

The cache (one file per store, `cache_dir()/<hash of the store>.parquet`) holds each run's row with
a fingerprint: status, start and end time, its latest metric timestamp and its tag count. A read
lists the selected experiments' active runs with their fingerprints (one query), re-reads the runs
that are new, changed, or not FINISHED/FAILED/KILLED (RUNNING and SCHEDULED runs are always read
anew), and drops the cached runs that are gone (deleted, or another store at the same path). The
listing comes first and the rows after, so a run that ends while the cache is read is at worst
read again next time, never served stale. Writers of the cache replace it atomically; readers never
lock the store. What the fingerprint cannot see: an existing tag of an ended run overwritten with
another value (same count, same times); `--drop-cache` rereads everything. Only sqlite stores are
cached here: http stores are read through MLflow's API (`analysis.runs.load_runs`), which is the
interface both paths keep."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError

BASE = ["run_id", "experiment", "status", "start_time", "end_time", "run_name"]
FINAL = ("FINISHED", "FAILED", "KILLED")  # a run in any other status is always read anew
FINGERPRINT = ["_experiment_id", "_status", "_start", "_end", "_metrics_ts", "_tags"]
_CHUNK = 500
_STR_DTYPE = pd.Series(["a"]).dtype != object  # what the API path's frame holds text as  # run ids per `IN (...)` (sqlite's variable limit)


def cache_dir() -> Path:
    """`$CIFARZOO_CACHE_DIR`, else `$XDG_CACHE_HOME/cifarzoo/runs`, else `~/.cache/cifarzoo/runs`."""
    given = os.environ.get("CIFARZOO_CACHE_DIR")
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifarzoo" / "runs"


def sqlite_file(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):].split("?")[0]).resolve() if uri.startswith("sqlite:///") else None


def cache_path(uri: str) -> Path:
    key = str(sqlite_file(uri) or uri)
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.parquet"


def drop_cache(uri: str | None = None) -> list[Path]:
    """Delete the cache of one store (or of every store); returns the files deleted."""
    files = [cache_path(uri)] if uri else sorted(cache_dir().glob("*.parquet"))
    gone = []
    for path in files:
        if path.exists():
            path.unlink()
            gone.append(path)
    return gone


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=20)
    db.execute("PRAGMA query_only=1")
    return db


def experiments(path: Path) -> dict[str, str]:
    """Name -> id of the active experiments of the sqlite store at `path`."""
    db = _connect(path)
    try:
        rows = db.execute("SELECT name, experiment_id FROM experiments WHERE lifecycle_stage = 'active'").fetchall()
    except sqlite3.DatabaseError as error:
        raise AnalysisError(f"--tracking-uri: {path} is no MLflow store ({error})") from None
    finally:
        db.close()
    return {name: str(experiment_id) for name, experiment_id in rows}


def histories(uri: str, run_ids: list[str], metric: str) -> pd.DataFrame:
    """Per-step values of `metric` (columns run_id, step, value) as `get_metric_history` gives them,
    run after run, for a sqlite store: one query per 500 runs instead of one call per run."""
    db = _connect(sqlite_file(uri))
    try:
        parts = [pd.read_sql_query(
            f"SELECT run_uuid AS run_id, step, CASE WHEN is_nan THEN NULL ELSE value END AS value, timestamp "
            f"FROM metrics WHERE key = ? AND run_uuid IN ({','.join('?' * len(chunk))})", db, params=[metric, *chunk])
            for chunk in (run_ids[i:i + _CHUNK] for i in range(0, len(run_ids), _CHUNK))]
    finally:
        db.close()
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["run_id", "step", "value", "timestamp"])
    position = {run_id: i for i, run_id in enumerate(dict.fromkeys(run_ids))}
    rows = rows.assign(_run=rows["run_id"].map(position)).sort_values(["_run", "timestamp", "step", "value"],
                                                                       kind="stable")
    return rows[["run_id", "step", "value"]].astype({"step": "int64", "value": "float64"}).reset_index(drop=True)


def _store_identity(db: sqlite3.Connection, path: Path) -> str:
    """Changes when the file at the path is another store (a regenerated one keeps run ids)."""
    stat = path.stat()
    created = db.execute("SELECT min(creation_time), count(*) FROM experiments").fetchone()
    return f"{stat.st_dev}:{stat.st_ino}:{created[0]}:{created[1]}"


def listing(db: sqlite3.Connection, experiment_ids: list[str]) -> pd.DataFrame:
    """The active runs of the experiments with their fingerprints."""
    marks = ",".join("?" * len(experiment_ids))
    query = f"""
        SELECT r.run_uuid AS run_id, CAST(r.experiment_id AS TEXT) AS _experiment_id, r.status AS _status,
               r.start_time AS _start, r.end_time AS _end,
               (SELECT max(timestamp) FROM latest_metrics m WHERE m.run_uuid = r.run_uuid) AS _metrics_ts,
               (SELECT count(*) FROM tags t WHERE t.run_uuid = r.run_uuid) AS _tags
        FROM runs r WHERE r.lifecycle_stage = 'active' AND r.experiment_id IN ({marks})"""
    listed = pd.read_sql_query(query, db, params=[int(e) for e in experiment_ids])
    return listed.astype({"_start": "float64", "_end": "float64", "_metrics_ts": "float64", "_tags": "int64"})


def read_rows(db: sqlite3.Connection, run_ids: list[str]) -> pd.DataFrame:
    """The wide rows (BASE but `experiment`, then params., metrics., tags.) of these runs."""
    frames = {"runs": [], "params": [], "metrics": [], "tags": []}
    for start in range(0, len(run_ids), _CHUNK):
        chunk = run_ids[start:start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        frames["runs"].append(pd.read_sql_query(
            f"SELECT run_uuid AS run_id, status, start_time, end_time, name AS run_name FROM runs "
            f"WHERE run_uuid IN ({marks})", db, params=chunk))
        frames["params"].append(pd.read_sql_query(
            f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", db, params=chunk))
        frames["metrics"].append(pd.read_sql_query(
            f"SELECT run_uuid, key, CASE WHEN is_nan THEN NULL ELSE value END AS value FROM latest_metrics "
            f"WHERE run_uuid IN ({marks})", db, params=chunk))
        frames["tags"].append(pd.read_sql_query(
            f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks}) AND key NOT LIKE 'mlflow.%'",
            db, params=chunk))
    runs = pd.concat(frames["runs"], ignore_index=True).set_index("run_id")
    wide = [runs]
    for kind in ("params", "metrics", "tags"):
        long = pd.concat(frames[kind], ignore_index=True)
        if long.empty:
            continue
        table = long.pivot(index="run_uuid", columns="key", values="value")
        table.columns = [f"{kind}.{k}" for k in table.columns]
        wide.append(table.astype("float64") if kind == "metrics" else table.astype("str" if _STR_DTYPE else object))
    frame = pd.concat(wide, axis=1, join="outer").reindex(runs.index)
    frame.index.name = "run_id"
    return frame.astype({"start_time": "float64", "end_time": "float64"}).copy().reset_index()  # copy: one block


def read_sqlite(uri: str, chosen: Mapping[str, str], use_cache: bool = True) -> pd.DataFrame:
    """The chosen experiments' (id -> name) active runs of a sqlite store as `search_runs` orders
    them, through the cache unless `use_cache` is false (then the cache is neither read nor written)."""
    if not chosen:
        return pd.DataFrame(columns=BASE)
    path = sqlite_file(uri)
    db = _connect(path)
    try:
        identity = _store_identity(db, path)
        listed = listing(db, list(chosen))
        cached = _read_cache(uri, identity) if use_cache else None
        if cached is not None:
            known = cached.merge(listed, on=["run_id", *FINGERPRINT], how="inner")
            known = known[known["_status"].isin(FINAL)]
            fresh_ids = sorted(set(listed["run_id"]) - set(known["run_id"]))
        else:
            known, fresh_ids = None, list(listed["run_id"])
        fresh = read_rows(db, fresh_ids) if fresh_ids else pd.DataFrame(columns=["run_id"])
    finally:
        db.close()
    fresh = fresh.merge(listed, on="run_id", how="inner")
    parts = [p for p in (known, fresh) if p is not None and not p.empty]
    rows = pd.concat(parts, ignore_index=True) if parts else fresh
    final = rows[rows["_status"].isin(FINAL)]  # the others are read anew every time: not kept
    if use_cache and _changed(cached, final, chosen, fresh_ids):
        others = cached[~cached["_experiment_id"].isin(list(chosen))] if cached is not None else None
        _write_cache(uri, identity, pd.concat([others, final], ignore_index=True)
                     if others is not None and not others.empty else final)
    return _finish(rows, chosen)


def _changed(cached: pd.DataFrame | None, final: pd.DataFrame, chosen: Mapping[str, str], fresh: list[str]) -> bool:
    """Whether the cache's rows of the chosen experiments differ from `final` (new, changed or gone runs)."""
    if cached is None or final["run_id"].isin(fresh).any():
        return True
    mine = cached[cached["_experiment_id"].isin(list(chosen))]
    return set(mine["run_id"]) != set(final["run_id"]) or len(mine) != len(final)


def _finish(rows: pd.DataFrame, chosen: Mapping[str, str]) -> pd.DataFrame:
    """Only the chosen runs' columns, in search_runs' order and the API path's column layout."""
    rows = pd.concat([rows, rows["_experiment_id"].map(dict(chosen)).rename("experiment")], axis=1)
    missing = rows["start_time"].isna().to_numpy()
    order = np.lexsort((rows["run_id"].to_numpy(), rows["start_time"].fillna(0).to_numpy(), missing))
    rows = rows.iloc[order].reset_index(drop=True)
    data = [c for c in rows.columns if c.startswith(("params.", "metrics.", "tags.")) and rows[c].notna().any()]
    frame = rows[[*BASE, *data]]
    text = [c for c in frame.columns if frame[c].dtype == object and c not in ("start_time", "end_time")]
    if _STR_DTYPE:  # pandas >= 3 infers text as its `str` dtype (missing values stay NaN)
        return frame.astype(dict.fromkeys(text, "str"))
    return frame


def _read_cache(uri: str, identity: str) -> pd.DataFrame | None:
    path = cache_path(uri)
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError, ImportError):
        return None
    if table.attrs.get("store") != identity or "_experiment_id" not in table.columns:
        return None
    table.attrs = {}
    return table


def _write_cache(uri: str, identity: str, rows: pd.DataFrame) -> None:
    """Atomically (a reader sees the old file or the new one); a cache that cannot be written is
    no error: the next read reads the store again."""
    path = cache_path(uri)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    rows = rows.copy(deep=False)
    rows.attrs = {"store": identity}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except (OSError, ValueError, ImportError):
        tmp.unlink(missing_ok=True)

