"""`python -m cifarzoo.bench`: both pipelines measured, the ratio, one-line errors.

Not a timed test: only that the numbers exist and agree with each other, never how fast."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cifarzoo import bench
from cifarzoo.paths import REPO_DIR

TINY = [
    "data=fake", "data.num_train=256", "data.num_test=32",
    "model.depth=8", "train.batch_size=32", "train.device=cpu",
    "--steps", "3", "--warmup", "1", "--workers", "0",
]


def run_bench(argv: list[str]) -> int:
    try:
        return bench.main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


def test_json_has_both_pipelines_and_their_ratio(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert run_bench([*TINY, "--json", "--out", str(tmp_path / "bench.json")]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)  # stdout is the JSON object alone; progress went to stderr
    assert json.loads((tmp_path / "bench.json").read_text()) == result
    rows = {row["pipeline"]: row for row in result["pipelines"]}
    assert set(rows) == {"cifarzoo", "classic"}  # no graph step on CPU: one cifarzoo row, eager
    assert (rows["cifarzoo"]["step"], rows["classic"]["step"]) == ("eager", "-")
    assert result["graph_not_measured"].startswith("train.step: graph cannot be used: train.device: a CUDA graph needs")
    assert result["ratios"] == {"eager/classic": result["ratio"]}
    for row in rows.values():
        assert row["images_per_s"] > 0
        assert row["device"] == "cpu"
        assert row["model"] == "resnet_preact-8"
        assert row["batch_size"] == 32
        assert row["precision"] == "fp32"
    assert result["ratio"] == pytest.approx(rows["cifarzoo"]["images_per_s"] / rows["classic"]["images_per_s"])
    assert (result["steps"], result["warmup"], result["workers"], result["data"]) == (3, 1, 0, "fake")
    assert "cifarzoo (eager step): measuring 3 steps" in err and "classic: measuring 3 steps" in err

    table = bench.format_table(result)
    lines = table.splitlines()
    assert lines[0].split() == ["pipeline", "step", "device", "model", "batch", "size", "precision", "images/s"]
    assert [line.split()[:2] for line in lines[1:3]] == [["cifarzoo", "eager"], ["classic", "-"]]
    assert f"ratio cifarzoo/classic: {result['ratio']:.2f}x  (eager/classic {result['ratio']:.2f}x)" in table
    assert "graph step not measured: train.step: graph cannot be used" in table


def test_report_has_the_eager_and_graph_columns_and_ratios() -> None:
    """What a CUDA run reports, from given measurements (the CPU cannot measure a graph step)."""
    setup = bench.Setup.__new__(bench.Setup)
    setup.graph_reason = ""
    setup.run = type("Run", (), {"device": torch.device("cpu"), "parts": type("P", (), {"settings": type("S", (), {"batch_size": 128}),
                                                                           "model": torch.nn.Linear(2, 2)})})()
    setup.cfg, setup.choices = bench.compose_config([])[0], {"model": "resnet_preact", "data": "fake"}
    setup.options = bench.Options(10, 2, 2)
    results = [bench.Measurement("cifarzoo", "fp32", 1.0, 10_000, "eager"),
               bench.Measurement("cifarzoo", "fp32", 1.0, 60_000, "graph"),
               bench.Measurement("classic", "fp32", 1.0, 5_000)]
    result = bench.report(setup, results)
    assert result["ratio"] == 12.0
    assert result["ratios"] == {"eager/classic": 2.0, "graph/classic": 12.0, "graph/eager": 6.0}
    assert [(r["pipeline"], r["step"]) for r in result["pipelines"]] == [("cifarzoo", "eager"), ("cifarzoo", "graph"),
                                                                        ("classic", "-")]
    assert "ratio cifarzoo/classic: 12.00x  (eager/classic 2.00x, graph/classic 12.00x, graph/eager 6.00x)" in \
        bench.format_table(result)


def test_data_defaults_to_fake_unless_overridden() -> None:
    assert bench.compose_config([])[1]["data"] == "fake"
    assert bench.compose_config(["data=mnist"])[1]["data"] == "mnist"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["precision=fp8"], "Could not find 'precision/fp8'"),
        (["model.depth"], "Error parsing override 'model.depth'"),
        (["model.no_such_key=1"], "Could not override 'model.no_such_key'"),
        (["train.batch_size=0"], "train.batch_size: must be a positive int"),
        (["model.depth=7"], "model.depth:"),
        (["--steps", "0"], "--steps: must be >= 1"),
    ],
)
def test_bad_override_is_one_line_and_exit_2(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench([*argv, "train.device=cpu"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("cifarzoo: error: ") and fragment in err


@pytest.mark.slow
def test_module_entry_point_reports_config_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cifarzoo.bench", "precision=fp8"],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("cifarzoo: error: ") and len(proc.stderr.strip().splitlines()) == 1
