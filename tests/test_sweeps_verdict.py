"""`sweeps table` verdicts on a real MLflow store: each verdict (reproduced by the t-interval of a mean,
by the bootstrap interval of a median, and within the tolerance with one run; differs; inconclusive
with one run and with a wide interval; not run; unknown network), a best-of-N row compared with the
best of ours and flagged, and a row whose runs come from two environments."""

from __future__ import annotations

import json
import math

import pytest
from analysis_store import Store
from mlflow.tracking import MlflowClient
from test_sweeps_reproduction import logged_params, seeded

from sweeps.cli import main
from sweeps.published import check_published, published_rows
from sweeps.study import load
from sweeps.verdict import aggregation_from_printed, parse_aggregation, statistics, verdict

STUDY = {
    "title": "verdicts", "source": "000_pytorch_image_classification_early.txt: a table", "experiment": "verdicts",
    "tolerance": 0.3, "overrides": ["data=fake", "model=resnet_preact"],
    "grids": [["model.depth=8,14,20,26,32,38,44", "seed=1,2,3"]],
    "published": {"printed": "median of 3 runs", "epoch": "last", "rows": {
        "model.depth=8": {"error": 5.0, "aggregation": "mean of 3"},
        "model.depth=14": 6.0,
        "model.depth=20": {"error": 5.0, "aggregation": "mean of 3"},
        "model.depth=26": {"error": 3.0, "printed": "1 run"},
        "model.depth=32": {"error": 3.0, "printed": "1 run"},
        "model.depth=38": {"error": 2.1, "aggregation": "best of 3"},
        "model.depth=44": 4.0,
        "model.depth=50": {"error": 3.5, "unknown_network": "network not in any commit"},
    }},
}
RUNS = {8: [4.9, 5.0, 5.1], 14: [5.0, 5.05, 5.1], 20: [4.0, 5.0, 6.0], 26: [3.2], 32: [4.0], 38: [2.05, 2.5, 2.6]}
GPU = {"torch": "2.11.0", "cuda": "13.0", "device_name": "NVIDIA H100 80GB HBM3", "train_step": "graph"}


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("verdicts")
    path = tmp / "verdicts.yaml"
    path.write_text(json.dumps(STUDY))
    study = load(str(path))
    assert check_published(study) == []
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    store = Store(uri, MlflowClient(uri))
    rows = {row.settings["model.depth"]: row for row in published_rows(study)}
    for depth, errors in RUNS.items():
        params = logged_params(rows[float(depth)].overrides, tmp)
        for seed, error in enumerate(errors, start=1):
            run_id = store.log(f"d{depth}-{seed}", study.experiment, seeded(params, seed), [9.0, error], 60)
            gpu = "NVIDIA H200" if depth == 8 and seed == 3 else GPU["device_name"]  # one row from two GPUs
            for key, value in {**GPU, "device_name": gpu}.items():
                store.client.set_tag(run_id, key, value)
    document = json.loads(_output(["table", str(path), f"tracking.uri={uri}", "--format", "json"]))
    markdown = _output(["table", str(path), f"tracking.uri={uri}"])
    return {**document, "by_depth": {row["overrides"][-1]: row for row in document["rows"]}, "markdown": markdown,
            "args": [str(path), f"tracking.uri={uri}"]}


def _output(args: list[str]) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return out.getvalue()


def row(table: dict, depth: int) -> dict:
    return table["by_depth"][f"model.depth={depth}"]


def test_a_mean_of_n_source_is_compared_with_the_t_interval_of_our_mean(table):
    r = row(table, 8)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 0.1
    assert (r["n"], r["statistic"], r["compared"], r["sd"]) == (3, "mean", 5.0, pytest.approx(0.1))
    assert r["interval"] == {"low": pytest.approx(5.0 - half, abs=1e-6), "high": pytest.approx(5.0 + half, abs=1e-6),
                             "method": "t"}
    assert r["verdict"] == "reproduced"


def test_a_median_source_outside_the_bootstrap_interval_differs(table):
    r = row(table, 14)
    assert (r["statistic"], r["median"], r["interval"]["method"]) == ("median", 5.05, "bootstrap")
    assert 5.0 <= r["interval"]["low"] <= r["interval"]["high"] <= 5.1
    assert r["verdict"] == "differs" and r["difference"] == pytest.approx(-0.95)


def test_an_interval_wider_than_twice_the_tolerance_is_inconclusive(table):
    r = row(table, 20)
    assert r["interval"]["high"] - r["interval"]["low"] > 0.6 and r["published"] == r["mean"] == 5.0
    assert r["verdict"] == "inconclusive"


def test_fewer_than_3_runs_use_the_tolerance(table):
    assert (row(table, 26)["verdict"], row(table, 26)["interval"]["method"]) == ("reproduced", None)  # 0.2 pp off
    assert row(table, 32)["verdict"] == "inconclusive"  # 1.0 pp off: one run cannot say it differs


def test_a_best_of_n_source_is_compared_with_our_best_and_flagged(table):
    r = row(table, 38)
    assert (r["statistic"], r["compared"], r["median"]) == ("best", 2.05, 2.5)
    assert r["interval"]["method"] == "bootstrap" and r["interval"]["low"] == 2.05
    assert r["verdict"] == "reproduced"  # our median (2.5) would differ from 2.1: like is compared with like
    assert any(note.startswith("best of 3 (") and "compared with the best of cifarzoo's 3" in note
               for note in table["notes"])


def test_not_run_and_unknown_network(table):
    assert (row(table, 44)["n"], row(table, 44)["verdict"]) == (0, "not run")
    unknown = row(table, 50)
    assert (unknown["study_runs"], unknown["verdict"], unknown["published"]) == (0, "unknown network", 3.5)
    assert any(note.endswith(": network not in any commit") and note.startswith("unknown network (")
               for note in table["notes"])
    summary = table["summary"]
    assert (summary["reproduced"], summary["differs"], summary["inconclusive"], summary["not run"],
            summary["unknown network"]) == (3, 1, 2, 1, 1)


def test_each_row_states_its_environment_and_a_mixed_row_is_flagged(table):
    assert row(table, 14)["environment"] == "torch 2.11.0 / CUDA 13.0 / NVIDIA H100 80GB HBM3 / fp32 / step graph"
    assert row(table, 8)["environment"] == "mixed (2)" and len(row(table, 8)["environments"]) == 2
    assert any(note.startswith("mixed environments (") and "NVIDIA H200" in note for note in table["notes"])


def test_the_markdown_table_shows_the_statistics_and_says_which_interval(table):
    head, *lines = [[c.strip() for c in line.split("|")[1:-1]] for line in table["markdown"].splitlines()
                    if line.startswith("| ")]
    cells = {line[0]: dict(zip(head, line)) for line in lines}
    assert ["n", "Median", "Mean", "S.d.", "95% interval", "Verdict", "Environment"] == head[-7:]
    by_verdict = {c["Verdict"]: c for c in cells.values()}
    assert set(by_verdict) == {"reproduced", "differs", "inconclusive", "not run", "unknown network"}
    assert by_verdict["differs"]["95% interval"].endswith("(boot)") and by_verdict["differs"]["n"] == "3/3"
    best = next(c for c in cells.values() if c["Median"] == "2.50")
    assert best[head[1]] == "2.05 (best of ours)"
    assert any(c["95% interval"].endswith("(t)") for c in cells.values())
    assert "95% intervals: t for a mean, bootstrap for a median or a best (n >= 3)" in table["markdown"]


@pytest.mark.parametrize(("text", "parsed"), [("median of 3", ("median", 3)), ("mean of 10", ("mean", 10)),
                                              ("best of 5", ("best", 5)), ("single run", ("single run", 1)),
                                              ("unstated", ("unstated", 0))])
def test_aggregation_forms(text, parsed):
    assert parse_aggregation(text) == parsed


def test_aggregation_read_off_the_seeds_wording():
    assert [aggregation_from_printed(t) for t in ("median of 3 runs", "average of 5 runs", "1 run",
                                                  "run count not stated", "1.6 for batch 8192")] == [
        "median of 3", "mean of 5", "single run", "unstated", None]


def test_a_printed_text_that_says_no_aggregation_needs_one(tmp_path):
    body = {**STUDY, "published": {"printed": "as in the paper", "rows": STUDY["published"]["rows"]}}
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(body))
    assert any("aggregation: state how the source aggregated" in p for p in check_published(load(str(path))))


def test_an_epoch_rule_that_contradicts_the_metric_is_a_problem(tmp_path):
    body = {**STUDY, "published": {**STUDY["published"], "epoch": "best"}}
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(body))
    assert any("rows report the best epoch" in p and "compares test_error" in p for p in check_published(load(str(path))))


def test_an_unknown_network_row_must_not_be_a_job_of_the_grids(tmp_path):
    rows = {**STUDY["published"]["rows"], "model.depth=44": {"error": 4.0, "unknown_network": "lost"}}
    body = {**STUDY, "published": {**STUDY["published"], "rows": rows}}
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(body))
    assert any("a row with unknown_network is not run" in p for p in check_published(load(str(path))))


def test_verdict_rules_without_a_store():
    three = statistics([1.0, 1.1, 1.2], "median of 3")
    assert verdict(three, 1.1, 0.3) == "reproduced" and verdict(three, 2.0, 0.3) == "differs"
    assert verdict(statistics([], "median of 3"), 1.0, 0.3) == "not run"
    assert verdict(three, None, 0.3) == "no number" and verdict(three, 1.1, 0.3, unknown_network=True) == "unknown network"


def test_agg_adds_a_column_of_that_aggregate(table):
    text = _output(["table", *table["args"], "--agg", "max"])
    head, *lines = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| ")]
    assert head[-1] == "cifarzoo: max (--agg)"
    assert next(line for line in lines if line[head.index("Median")] == "5.05")[-1] == "5.10"
