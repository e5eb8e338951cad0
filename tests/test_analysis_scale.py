"""Lab-scale reading of runs: the SQL path and its incremental cache (analysis/runcache.py) give the
frame and the tables MLflow's API gives, on a 2,000-run store from `cifarzoo.store_scale`; the cache
never serves a stale row of a run that was re-run, resumed, deleted or replaced."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from analysis import cli, labels, runcache
from analysis.aggregate import aggregate
from analysis.formats import render_table
from analysis.plots import fetch_histories
from analysis.runs import load_runs, param_name
from cifarzoo.store_scale import generate
from sweeps.report import report

RUNS = 2000


@pytest.fixture(scope="session")
def scale_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("scale") / "scale.db"
    summary = generate(path, RUNS, experiments=4, per_study=2, epochs=12)
    assert summary["runs"] == RUNS
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def api_runs(scale_store: str) -> pd.DataFrame:
    """The reference: every run through MLflow's search_runs."""
    return load_runs(scale_store, ["*"], api=True)


def test_sql_and_cache_give_the_api_frame(scale_store: str, api_runs: pd.DataFrame) -> None:
    assert len(api_runs) == RUNS and api_runs["experiment"].nunique() == 4
    assert {"FINISHED", "FAILED", "RUNNING", "KILLED"} <= set(api_runs["status"])
    for cache in (False, True, True):  # without the cache, cold, warm
        pd.testing.assert_frame_equal(load_runs(scale_store, ["*"], cache=cache), api_runs)
    one = api_runs["experiment"].iloc[0]
    reference = load_runs(scale_store, [one], api=True)
    pd.testing.assert_frame_equal(load_runs(scale_store, [one]), reference)


def test_tables_equal_the_api_paths(scale_store: str, api_runs: pd.DataFrame) -> None:
    runs = load_runs(scale_store, ["*"])
    for fmt in ("markdown", "json", "csv"):
        assert render_table(aggregate(runs), fmt) == render_table(aggregate(api_runs), fmt)


def test_labels_once_per_configuration_are_the_per_run_labels(api_runs: pd.DataFrame) -> None:
    """`aggregate` labels distinct model/aug params once: every row's label is what labelling each of
    its runs on its own gives, and the rows hold each finished run exactly once."""
    configs = aggregate(api_runs)
    by_id = api_runs.set_index("run_id")
    params = [c for c in api_runs.columns if c.startswith("params.")]
    for config in configs.sample(40, random_state=0).itertuples():
        texts = {labels.label({param_name(k): v for k, v in by_id.loc[r, params].fillna("").astype(str).items()})[0]
                 for r in config.run_ids}
        assert config.label == " / ".join(sorted(texts))
    ids = [r for ids in configs["run_ids"] for r in ids]
    assert len(ids) == len(set(ids)) == int(((api_runs["status"] == "FINISHED")
                                             & api_runs["metrics.test_error"].notna()).sum())


def test_labels_read_only_model_and_aug_params(api_runs: pd.DataFrame) -> None:
    """What lets aggregate label once per distinct model/aug params (`labels.reads`)."""
    read: set[str] = set()

    class Recording(dict):
        def get(self, key, default=None):  # noqa: ANN001, ANN202
            read.add(key)
            return super().get(key, default)

    for _, run in api_runs.drop_duplicates("params.model").iterrows():
        labels.label(Recording({param_name(k): v for k, v in run.items() if k.startswith("params.")}))
    assert read and all(labels.reads(key) for key in read)


def test_histories_by_sql_equal_the_api(scale_store: str, api_runs: pd.DataFrame) -> None:
    ids = list(api_runs["run_id"][:25])
    client = MlflowClient(scale_store)
    expected = pd.DataFrame([(r, m.step, m.value) for r in ids for m in client.get_metric_history(r, "test_error")],
                            columns=["run_id", "step", "value"])
    pd.testing.assert_frame_equal(fetch_histories(scale_store, ids, progress=False), expected)


def test_report_equals_the_api_path(scale_store: str, api_runs: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every study's table (one read of all the studies' experiments, rows matched once per distinct
    params) as from the API's frame."""
    fast = report(scale_store)
    assert "| reproduced" in fast or "| differs" in fast  # rows with runs
    import sweeps.report

    def api_frame(uri: str, names: list[str], cache: bool = True) -> pd.DataFrame:
        assert sorted(names) == sorted(api_runs["experiment"].unique())
        return api_runs

    monkeypatch.setattr(sweeps.report, "load_runs", api_frame)
    assert report(scale_store) == fast


# The cache against writers --------------------------------------------------------------------

@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, MlflowClient]:
    uri = f"sqlite:///{tmp_path_factory.mktemp('cache') / 'mlflow.db'}"
    return uri, MlflowClient(uri)


def _run(client: MlflowClient, experiment: str, error: float, status: str = "FINISHED") -> str:
    run = client.create_run(client.get_experiment_by_name(experiment).experiment_id, run_name="r")
    client.log_batch(run.info.run_id, metrics=[Metric("test_error", error, int(time.time() * 1000), 1)])
    client.log_param(run.info.run_id, "model", "resnet_preact")
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def _errors(uri: str, experiment: str, **kw: bool) -> dict[str, float]:
    runs = load_runs(uri, [experiment], **kw)
    return dict(zip(runs["run_id"], runs["metrics.test_error"]))


def test_a_rerun_finished_run_is_read_again(small: tuple[str, MlflowClient]) -> None:
    uri, client = small
    client.create_experiment("rerun")
    run_id = _run(client, "rerun", 9.0)
    assert _errors(uri, "rerun") == {run_id: 9.0}
    assert runcache.cache_path(uri).exists()
    time.sleep(0.01)  # a new end time
    client.update_run(run_id, status="RUNNING")  # resumed, as tracking.Tracker.open does
    assert _errors(uri, "rerun") == {run_id: 9.0}
    client.log_batch(run_id, metrics=[Metric("test_error", 4.0, int(time.time() * 1000), 2)])
    assert _errors(uri, "rerun") == {run_id: 4.0}  # RUNNING: always read anew
    client.set_terminated(run_id, "FINISHED")
    assert _errors(uri, "rerun") == {run_id: 4.0}
    assert _errors(uri, "rerun") == _errors(uri, "rerun", api=True)


def test_a_deleted_run_leaves_the_table(small: tuple[str, MlflowClient]) -> None:
    uri, client = small
    client.create_experiment("deleted")
    keep, gone = _run(client, "deleted", 5.0), _run(client, "deleted", 6.0)
    assert set(_errors(uri, "deleted")) == {keep, gone}
    client.delete_run(gone)
    assert set(_errors(uri, "deleted")) == {keep}
    client.restore_run(gone)
    assert set(_errors(uri, "deleted")) == {keep, gone}


def test_a_tag_set_after_the_end_is_read(small: tuple[str, MlflowClient]) -> None:
    uri, client = small
    client.create_experiment("tagged")
    run_id = _run(client, "tagged", 5.0, status="FAILED")
    assert "tags.failure_reason" not in load_runs(uri, ["tagged"]).columns
    client.set_tag(run_id, "failure_reason", "diverged")
    assert load_runs(uri, ["tagged"])["tags.failure_reason"].tolist() == ["diverged"]


def test_another_store_at_the_same_path_is_not_served_from_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    generate(path, 30, experiments=1, per_study=1, epochs=3, seed=1)
    uri = f"sqlite:///{path}"
    first = load_runs(uri, ["*"])
    generate(path, 30, experiments=1, per_study=1, epochs=5, seed=1)  # the same run ids, other numbers
    second = load_runs(uri, ["*"])
    assert list(first["run_id"]) == list(second["run_id"])
    pd.testing.assert_frame_equal(second, load_runs(uri, ["*"], api=True))
    assert not first["metrics.test_error"].equals(second["metrics.test_error"])


def test_no_cache_and_drop_cache(small: tuple[str, MlflowClient], capsys: pytest.CaptureFixture[str]) -> None:
    uri, client = small
    client.create_experiment("flags")
    _run(client, "flags", 5.0)
    path = runcache.cache_path(uri)
    path.unlink(missing_ok=True)
    assert cli.main(["table", "--tracking-uri", uri, "--experiment", "flags", "--no-cache"]) == 0
    assert not path.exists()
    assert cli.main(["table", "--tracking-uri", uri, "--experiment", "flags"]) == 0
    assert path.exists()
    assert cli.main(["table", "--tracking-uri", uri, "--experiment", "flags", "--drop-cache", "--no-cache"]) == 0
    assert not path.exists()
    assert "deleted the run cache" in capsys.readouterr().err


def test_sweeps_no_cache_writes_no_cache(small: tuple[str, MlflowClient], tmp_path: Path) -> None:
    from sweeps.cli import main

    uri, _ = small
    runcache.drop_cache(uri)
    assert main(["report", f"tracking.uri={uri}", "--no-cache", "--out", str(tmp_path / "r.md")]) == 0
    assert not runcache.cache_path(uri).exists() and (tmp_path / "r.md").exists()
    assert main(["table", "h000_mnist", f"tracking.uri={uri}", "--no-cache", "--out", str(tmp_path / "t.md")]) == 0
    assert not runcache.cache_path(uri).exists()


def test_generated_store_is_mlflows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m cifarzoo.store_scale`: MLflow's own client reads the runs, with cifarzoo's params,
    tags and metrics."""
    from cifarzoo.store_scale import main

    path = tmp_path / "s.db"
    assert main(["20", "--out", str(path), "--experiments", "2", "--configs-per-study", "1", "--epochs", "3"]) == 0
    assert '"runs": 20' in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{path}")
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments], max_results=100)
    assert len(runs) == 20 and len({r.info.experiment_id for r in runs}) == 2
    run = next(r for r in runs if r.info.status == "FINISHED")
    assert {"model", "optim.lr", "train.batch_size", "seed", "data"} <= set(run.data.params)
    assert {"config_hash", "overrides", "output_dir", "git_commit"} <= set(run.data.tags)
    assert {"test_error", "best_test_error", "train_time_s"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_error")] == [1, 2, 3]
