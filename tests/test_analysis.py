"""`python -m analysis`: exact tables (every format), pivots, exclusions, labels and plots from a
real MLflow sqlite store holding known runs (tests/analysis_store.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from analysis_store import Store, build, params_for

import analysis
from analysis import cli
from analysis.labels import format_duration, label
from cifarzoo.paths import REPO_DIR


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build(tmp_path_factory.mktemp("analysis") / "mlflow.db")


def table(capsys: pytest.CaptureFixture[str], store: Store, *args: str) -> tuple[int, str, str]:
    code = cli.main(["table", "--tracking-uri", store.uri, *args])
    out, err = capsys.readouterr()
    return code, out, err


LR_MARKDOWN = """\
| Model            | Batch size | Initial LR | LR schedule | Test Error (median of 3 runs) | Training Time |
|------------------|-----------:|-----------:|-------------|------------------------------:|--------------:|
| ResNet-preact-20 |        128 |        0.1 | cosine      |                          8.10 |           24m |
| ResNet-preact-20 |        128 |        0.1 | multistep   |       8.30 (median of 5 runs) |         3h06m |
| ResNet-preact-20 |        128 |        0.2 | cosine      |                          7.90 |           25m |
| ResNet-preact-20 |        256 |        0.1 | cosine      |                          8.50 |           20m |
| ResNet-preact-20 |        256 |        0.2 | cosine      |                  9.00 (1 run) |           19m |

excluded: 2 runs — 1 failed (diverged), 1 running
"""


def test_markdown_table_groups_the_varying_params_and_reports_excluded_runs(capsys, store):
    code, out, err = table(capsys, store, "--experiment", "lr-study")
    assert (code, out, err) == (0, LR_MARKDOWN, "")


def test_csv_table_carries_numbers_and_the_footer_goes_to_stderr(capsys, store):
    code, out, err = table(capsys, store, "--experiment", "lr-study", "--format", "csv")
    assert code == 0
    assert out == """\
Model,Batch size,Initial LR,LR schedule,Test Error (median),Runs,Training Time (s)
ResNet-preact-20,128,0.1,cosine,8.1,3,1440.0
ResNet-preact-20,128,0.1,multistep,8.3,5,11160.0
ResNet-preact-20,128,0.2,cosine,7.9,3,1500.0
ResNet-preact-20,256,0.1,cosine,8.5,3,1210.0
ResNet-preact-20,256,0.2,cosine,9.0,1,1150.0
"""
    assert err == "excluded: 2 runs — 1 failed (diverged), 1 running\n"


def test_latex_table_with_mean_and_std(capsys, store):
    code, out, err = table(capsys, store, "--experiment", "lr-study", "--format", "latex", "--agg", "mean_std")
    assert code == 0
    assert out == r"""\begin{tabular}{lrrlrr}
\toprule
Model & Batch size & Initial LR & LR schedule & Test Error (mean $\pm$ std of 3 runs) & Training Time \\
\midrule
ResNet-preact-20 & 128 & 0.1 & cosine & 8.15 $\pm$ 0.13 & 24m \\
ResNet-preact-20 & 128 & 0.1 & multistep & 8.32 $\pm$ 0.19 (5 runs) & 3h06m \\
ResNet-preact-20 & 128 & 0.2 & cosine & 7.87 $\pm$ 0.15 & 25m \\
ResNet-preact-20 & 256 & 0.1 & cosine & 8.50 $\pm$ 0.10 & 20m \\
ResNet-preact-20 & 256 & 0.2 & cosine & 9.00 (1 run) & 19m \\
\bottomrule
\end{tabular}
"""
    assert err == "excluded: 2 runs — 1 failed (diverged), 1 running\n"


def test_json_table_has_values_run_ids_and_excluded_runs(capsys, store):
    code, out, _ = table(capsys, store, "--experiment", "lr-study", "--format", "json")
    assert code == 0
    document = json.loads(out)
    for row_ in document["rows"]:  # runs of a configuration are in start order; equal start times may swap
        row_["run_ids"] = sorted(row_["run_ids"])
    ids = {name: sorted(run_ids) for name, run_ids in store.ids.items()}

    def row(bs, lr, sched, value, std, lo, hi, runs, seconds, run_ids, cell, time):
        return {
            "model": "ResNet-preact-20",
            "params": {"train.batch_size": bs, "optim.lr": lr, "sched": sched},
            "test_error": value, "test_error_std": std, "test_error_min": lo, "test_error_max": hi,
            "runs": runs, "train_time_s": seconds, "run_ids": run_ids,
            "cells": ["ResNet-preact-20", bs, lr, sched, cell, time],
        }

    assert document == {
        "metric": "test_error",
        "agg": "median",
        "runs_per_row": 3,
        "keys": ["train.batch_size", "optim.lr", "sched"],
        "headers": ["Model", "Batch size", "Initial LR", "LR schedule", "Test Error (median of 3 runs)",
                    "Training Time"],
        "rows": [
            row("128", "0.1", "cosine", 8.1, 0.132288, 8.05, 8.3, 3, 1440.0, ids["bs128-lr0.1"], "8.10", "24m"),
            row("128", "0.1", "multistep", 8.3, 0.192354, 8.1, 8.6, 5, 11160.0, ids["multistep"],
                "8.30 (median of 5 runs)", "3h06m"),
            row("128", "0.2", "cosine", 7.9, 0.152753, 7.7, 8.0, 3, 1500.0, ids["bs128-lr0.2"], "7.90", "25m"),
            row("256", "0.1", "cosine", 8.5, 0.1, 8.4, 8.6, 3, 1210.0, ids["bs256-lr0.1"], "8.50", "20m"),
            row("256", "0.2", "cosine", 9.0, None, 9.0, 9.0, 1, 1150.0, ids["bs256-lr0.2"], "9.00 (1 run)", "19m"),
        ],
        "excluded": {
            "summary": "excluded: 2 runs — 1 failed (diverged), 1 running",
            "runs": [
                {"run_id": ids["bs256-lr0.2-diverged"][0], "experiment": "lr-study",
                 "run_name": "bs256-lr0.2-diverged", "status": "FAILED", "reason": "diverged"},
                {"run_id": ids["bs256-lr0.2-running"][0], "experiment": "lr-study",
                 "run_name": "bs256-lr0.2-running", "status": "RUNNING", "reason": None},
            ],
        },
    }


PIVOT_MARKDOWN = """\
Test Error (median of 3 runs) — ResNet-preact-20, LR schedule: cosine

| Batch size \\ Initial LR |  0.1 |          0.2 |
|------------------------:|-----:|-------------:|
|                     128 | 8.10 |         7.90 |
|                     256 | 8.50 | 9.00 (1 run) |

Test Error (median of 3 runs) — ResNet-preact-20, LR schedule: multistep

| Batch size \\ Initial LR |                     0.1 |
|------------------------:|------------------------:|
|                     128 | 8.30 (median of 5 runs) |

excluded: 2 runs — 1 failed (diverged), 1 running
"""


def test_pivot_grids_one_per_schedule(capsys, store):
    code, out, _ = table(capsys, store, "--experiment", "lr-study", "--pivot", "train.batch_size", "optim.lr")
    assert (code, out) == (0, PIVOT_MARKDOWN)
    # short keys resolve when unique
    code, out, _ = table(capsys, store, "--experiment", "lr-study", "--pivot", "batch_size", "lr", "--format", "csv")
    assert out == """\
Model,LR schedule,Batch size,Initial LR=0.1,Initial LR=0.2
ResNet-preact-20,cosine,128,8.1,7.9
ResNet-preact-20,cosine,256,8.5,9.0
ResNet-preact-20,multistep,128,8.3,
"""
    code, out, _ = table(capsys, store, "--experiment", "lr-study", "--pivot", "train.batch_size", "optim.lr",
                         "--format", "latex", "--where", "sched=cosine")
    assert out == r"""% Test Error (median of 3 runs) — ResNet-preact-20
\begin{tabular}{rrr}
\toprule
Batch size \textbackslash{} Initial LR & 0.1 & 0.2 \\
\midrule
128 & 8.10 & 7.90 \\
256 & 8.50 & 9.00 (1 run) \\
\bottomrule
\end{tabular}
"""
    code, out, _ = table(capsys, store, "--experiment", "lr-study", "--pivot", "train.batch_size", "optim.lr",
                         "--format", "json")
    grids = json.loads(out)["grids"]
    assert [g["fixed"] for g in grids] == [{"sched": "cosine"}, {"sched": "multistep"}]
    assert [[c and c["cell"] for c in row] for row in grids[0]["cells"]] == [["8.10", "7.90"], ["8.50", "9.00 (1 run)"]]
    assert sorted(grids[1]["cells"][0][0]["run_ids"]) == sorted(store.ids["multistep"])


ZOO_MARKDOWN = """\
| Model                                          | # of Epochs |      Test Error (1 run) | Training Time |
|------------------------------------------------|------------:|------------------------:|--------------:|
| DenseNet-BC-100 (k=12)                         |           4 |                    4.69 |        15h20m |
| PyramidNet-110 (alpha=270)                     |           4 |                    3.92 |        24h12m |
| ResNet-preact-20, widening factor 4, Cutout 16 |           4 |                    4.30 |         2h37m |
| ResNet-preact-164 bottleneck                   |           4 |                    5.90 |         4h01m |
| ResNeXt-29 8x64d                               |           4 |                    3.97 |        42h50m |
| shake-shake-26 2x32d (S-S-I)                   |           6 |                    3.68 |        33h49m |
| WRN-28-10                                      |           4 | 4.03 (median of 3 runs) |        16h10m |

excluded: 2 runs — 1 failed (RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB), 1 killed
"""


def test_model_labels_run_counts_and_failure_reasons(capsys, store):
    code, out, _ = table(capsys, store, "--experiment", "zoo")
    assert (code, out) == (0, ZOO_MARKDOWN)


def test_where_rows_and_aggregates(capsys, store):
    lr = ["--experiment", "lr-*", "--format", "csv"]  # a glob
    _, out, _ = table(capsys, store, *lr, "--where", "sched=multistep", "--agg", "max")
    assert out == "Model,Test Error (max),Runs,Training Time (s)\nResNet-preact-20,8.6,5,11160.0\n"
    # numbers compare as numbers: 0.10 is the logged 0.1; --rows merges the other params
    _, out, _ = table(capsys, store, *lr, "--where", "optim.lr=0.10", "--rows", "train.batch_size", "--agg", "min")
    assert out == ("Model,Batch size,Test Error (min),Runs,Training Time (s)\n"
                   "ResNet-preact-20,128,8.05,8,11160.0\nResNet-preact-20,256,8.4,3,1210.0\n")
    _, out, _ = table(capsys, store, *lr, "--where", "train.batch_size=256", "--agg", "mean")
    assert out == ("Model,Initial LR,Test Error (mean),Runs,Training Time (s)\n"
                   "ResNet-preact-20,0.1,8.5,3,1210.0\nResNet-preact-20,0.2,9.0,1,1150.0\n")
    _, out, _ = table(capsys, store, "--experiment", "zoo", "--where", "model=res*", "--agg", "mean")
    assert out == """\
| Model                                          | Test Error (1 run) | Training Time |
|------------------------------------------------|-------------------:|--------------:|
| ResNet-preact-20, widening factor 4, Cutout 16 |               4.30 |         2h37m |
| ResNet-preact-164 bottleneck                   |               5.90 |         4h01m |
| ResNeXt-29 8x64d                               |               3.97 |        42h50m |
"""


def test_out_file_and_default_tracking_uri(capsys, store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)  # what cifarzoo.paths.default_tracking_uri reads
    out = tmp_path / "tables" / "lr.md"
    assert cli.main(["table", "--experiment", "lr-study", "--out", str(out)]) == 0
    assert out.read_text() == LR_MARKDOWN
    _, err = capsys.readouterr()
    assert err == f"analysis: wrote {out}\nexcluded: 2 runs — 1 failed (diverged), 1 running\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiment", "nope"], "--experiment: no experiment matches 'nope' (experiments: Default, lr-study, resnet-depths, zoo)"),
        (["--experiment", "lr-study", "--where", "optim.lrr=0.1"],
         "--where: no selected run has a param 'optim.lrr'; did you mean optim.lr?"),
        (["--experiment", "lr-study", "--where", "model=wrm"], "--where model=wrm: no run has that value (values: "
                                                                "resnet_preact)"),
        (["--experiment", "lr-study", "--where", "model"], "--where: expected KEY=VALUE (got 'model')"),
        (["--experiment", "lr-study", "--rows", "depth,bogus"], "--rows: no selected run has a param 'bogus'"),
        (["--experiment", "lr-study", "--pivot", "train.batch_size", "train.batch_size"],
         "--pivot: the row and column keys must differ"),
        (["--experiment", "lr-study", "--agg", "avg"],
         "argument --agg: invalid choice: 'avg' (choose from 'median', 'mean', 'mean_std', 'min', 'max')"),
        (["--experiment", "lr-study", "--format", "html"],
         "argument --format: invalid choice: 'html' (choose from 'markdown', 'csv', 'latex', 'json')"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, store, args, message):
    with pytest.raises(SystemExit) if "--agg" in args or "--format" in args else _nothing() as raised:
        code = cli.main(["table", "--tracking-uri", store.uri, *args])
    if raised is not None:
        code = raised.value.code
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", f"analysis: error: {message}\n")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_missing_store_is_refused_not_created(capsys, tmp_path):
    db = tmp_path / "typo.db"
    assert cli.main(["table", "--tracking-uri", f"sqlite:///{db}"]) == 2
    assert capsys.readouterr().err == f"analysis: error: --tracking-uri: no MLflow store at {db}\n"
    assert not db.exists()


def test_api_reads_all_runs_with_one_search_and_no_histories(store, monkeypatch):
    from mlflow.tracking import MlflowClient

    calls = {"search_runs": 0, "get_metric_history": 0}
    search, history = MlflowClient.search_runs, MlflowClient.get_metric_history

    def counted_search(self, *a, **kw):
        calls["search_runs"] += 1
        return search(self, *a, **kw)

    def counted_history(self, *a, **kw):
        calls["get_metric_history"] += 1
        return history(self, *a, **kw)

    monkeypatch.setattr(MlflowClient, "search_runs", counted_search)
    monkeypatch.setattr(MlflowClient, "get_metric_history", counted_history)
    runs = analysis.load_runs(store.uri, experiments=["lr-study", "zoo"], api=True)
    assert calls == {"search_runs": 1, "get_metric_history": 0}
    fast = analysis.load_runs(store.uri, experiments=["lr-study", "zoo"])  # a sqlite store's SQL path: no API call
    assert calls == {"search_runs": 1, "get_metric_history": 0}
    pd.testing.assert_frame_equal(fast, runs)
    assert len(runs) == 17 + 11
    assert list(runs.columns[:6]) == ["run_id", "experiment", "status", "start_time", "end_time", "run_name"]
    assert {"params.optim.lr", "metrics.test_error", "metrics.train_time_s", "tags.config_hash"} <= set(runs.columns)
    assert runs.set_index("run_name").loc["shake", "metrics.test_error"] == 3.68  # the last epoch's value

    configs = analysis.aggregate(analysis.filter_runs(runs, {"model": "wrn"}), agg="median")
    assert configs.attrs["keys"] == []
    assert configs[["label", "runs", "test_error", "train_time_s"]].values.tolist() == [["WRN-28-10", 3, 4.03, 58200.0]]
    assert configs.attrs["excluded"] == ("excluded: 2 runs — 1 failed (RuntimeError: CUDA out of memory. "
                                         "Tried to allocate 2.00 GiB), 1 killed")
    lr = analysis.aggregate(runs[runs["experiment"] == "lr-study"], rows=["sched"])
    assert lr[["sched", "runs", "test_error"]].values.tolist() == [["cosine", 10, 8.2], ["multistep", 5, 8.3]]
    assert analysis.render_table(lr).splitlines()[0] == (
        "| Model            | LR schedule | Test Error (median of 10 runs) | Training Time |")


def test_model_and_augmentation_labels():
    def name(**kw: str) -> str:
        return label(params_for(**kw))[0]

    assert name() == "ResNet-preact-20"
    assert name(model__widen="4", aug="cutout", aug__cutout__size="16") == \
        "ResNet-preact-20, widening factor 4, Cutout 16"
    assert name(model__depth="1001", model__block="bottleneck") == "ResNet-preact-1001 bottleneck"
    assert name(model="wrn") == "WRN-28-10"
    assert name(model="wrn", model__drop_rate="0.3") == "WRN-28-10 w/ dropout (p=0.3)"
    assert name(model="densenet") == "DenseNet-BC-100 (k=12)"
    assert name(model="densenet", model__block="basic", model__compression="1.0") == "DenseNet-100 (k=12)"
    assert name(model="densenet", model__depth="250", model__growth_rate="24") == "DenseNet-BC-250 (k=24)"
    assert name(model="pyramidnet") == "PyramidNet-110 (alpha=270)"
    assert name(model="pyramidnet", model__depth="272", model__block="bottleneck", model__alpha="200") == \
        "PyramidNet-272 bottleneck (alpha=200)"
    assert name(model="resnext") == "ResNeXt-29 8x64d"
    assert name(model="shake_shake") == "shake-shake-26 2x32d (S-S-I)"
    assert name(model="shake_shake", model__shake_backward="even", model__shake_level="batch") == \
        "shake-shake-26 2x32d (S-E-B)"
    assert name(model="shake_shake", model__shake_forward="even", model__shake_backward="keep") == \
        "shake-shake-26 2x32d (E-K-I)"
    assert name(model="shake_shake", model__depth="29", model__cardinality="4", model__base_channels="64") == \
        "shake-shake-29 2x4x64d (S-S-I)"
    assert label({"model": "vgg", "model.layers": "[2, 2, 3, 3, 3]", "model.channels": "[64, 128, 256, 512, 512]",
                  "model.batch_norm": "True"})[0] == "VGG-like (depth 15, w/ BN, channel 64)"
    assert label({"model": "se_resnet_preact", "model.depth": "56"})[0] == "SE-ResNet-preact-56"
    assert label({"model": "convmixer", "model.dim": "256", "model.depth": "16"})[0] == "ConvMixer-256/16"
    assert label({"model": "resnet_imagenet_style", "model.depth": "14", "model.widen": "2"})[0] == \
        "ResNet-14, widening factor 2"
    assert label({"model": "vgg16", "model.batch_norm": "False"})[0] == "VGG-16 w/o BN"
    assert label({"model": "regnet", "model.variant": "X-200MF"})[0] == "RegNetX-200MF"
    assert label({"model": "dpn", "model.variant": "26"})[0] == "DPN-26"
    assert label({"model": "senet18", "model.depth": "18"})[0] == "SENet-18"
    assert label({"model": "resnet_imagenet_style", "model.depth": "50"})[0] == "ResNet-50"
    assert label({"model": "mystery_net", "model.depth": "8"})[0] == "mystery_net-8"
    assert name(aug="mixup", aug__mixup__alpha="1.0") == "ResNet-preact-20, Mixup (alpha=1)"
    assert name(aug="cutout+mixup", aug__mixup__alpha="0.5", aug__cutout__size="12") == \
        "ResNet-preact-20, Cutout 12, Mixup (alpha=0.5)"
    assert name(aug="random_erasing") == "ResNet-preact-20, RandomErasing"
    assert name(aug="none") == "ResNet-preact-20, no augmentation"
    assert name(aug="dual_cutout", aug__dual_cutout__size="16", aug__dual_cutout__alpha="0.1") == \
        "ResNet-preact-20, dual-cutout 16 (alpha=0.1)"
    assert name(aug="ricap", aug__ricap__beta="0.3", aug__random_crop="True") == \
        "ResNet-preact-20, RICAP (beta=0.3), random crop"
    assert name(aug="ricap", aug__ricap__beta="0.3", aug__random_crop="False") == "ResNet-preact-20, RICAP (beta=0.3)"


@pytest.mark.parametrize(("seconds", "text"), [
    (12.4, "12s"), (59.4, "59s"), (59.6, "1m"), (2280, "38m"), (3569, "59m"), (3599, "1h00m"), (11160, "3h06m"),
    (58200, "16h10m"), (364320, "101h12m"), (float("nan"), "-"),
])
def test_training_time_like_the_seeds(seconds, text):
    assert format_duration(seconds) == text


def test_plots_are_written_as_png_and_svg(capsys, store, tmp_path):
    common = ["--tracking-uri", store.uri, "--experiment", "lr-study"]
    curves, param, heatmap = tmp_path / "curves.png", tmp_path / "err_vs_bs.svg", tmp_path / "grid.png"
    assert cli.main(["plot", "curves", *common, "--out", str(curves)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("analysis: fetching test_error histories of 15 runs\n")
    assert f"analysis: wrote {curves}; excluded: 2 runs" in err
    assert cli.main(["plot", "param", *common, "--x", "train.batch_size", "--by", "sched", "--out", str(param)]) == 0
    assert cli.main(["plot", "heatmap", *common, "--pivot", "train.batch_size", "optim.lr", "--out", str(heatmap)]) == 0
    for png in (curves, heatmap):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    svg = param.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "</svg>" in svg
    capsys.readouterr()
    assert cli.main(["plot", "param", *common, "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == "analysis: error: plot param: needs --x KEY\n"
    assert cli.main(["plot", "curves", *common, "--out", str(tmp_path / "x.jpg")]) == 2
    assert capsys.readouterr().err == (f"analysis: error: --out: the file name must end in .png, .svg, .pdf "
                                       f"(got '{tmp_path / 'x.jpg'}')\n")


def test_plot_api_returns_figures(store):
    from analysis import plots

    runs = analysis.load_runs(store.uri, "zoo")
    configs = analysis.aggregate(runs)
    history = plots.fetch_histories(store.uri, [r for ids in configs["run_ids"] for r in ids], progress=False)
    assert sorted(history.groupby("run_id")["step"].max().value_counts().items()) == [(4, 8), (6, 1)]
    fig = plots.plot_curves(configs, history)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "Epoch" and ax.get_ylabel() == "Test Error (%)"
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "WRN-28-10, # of Epochs 4 (3 runs)"


@pytest.mark.slow
def test_module_entry_point(store):
    base = [sys.executable, "-m", "analysis", "table", "--tracking-uri", store.uri]
    done = subprocess.run([*base, "--experiment", "lr-study"], cwd=REPO_DIR, capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout) == (0, LR_MARKDOWN)
    done = subprocess.run([*base, "--pivot", "a"], cwd=REPO_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == "analysis: error: argument --pivot: expected 2 arguments\n"
    assert Path(REPO_DIR / "analysis" / "__main__.py").exists()


def test_exclusion_footer_counts_each_kind():
    import pandas as pd

    runs = pd.DataFrame({
        "run_id": list("abcdefgh"), "experiment": "x", "run_name": list("abcdefgh"),
        "status": ["FINISHED", "FINISHED", "FAILED", "FAILED", "FAILED", "KILLED", "SCHEDULED", "RUNNING"],
        "metrics.test_error": [5.0, None, None, None, None, None, None, 9.0],
        "tags.failure_reason": [None, None, "diverged", "diverged", "ValueError: " + "x" * 80, None, None, None],
    })
    assert analysis.excluded_summary(runs) == (
        "excluded: 7 runs — 2 failed (diverged), 1 failed (ValueError: " + "x" * 45 + "...), 1 killed, "
        "1 running, 1 scheduled, 1 finished without test_error")
    assert analysis.excluded_summary(runs[:1]) == ""


def test_unknown_metric_and_tag_rows(capsys, store):
    code, out, err = table(capsys, store, "--experiment", "zoo", "--metric", "top1")
    assert (code, out) == (2, "")
    assert err == ("analysis: error: --metric: no selected run logged 'top1' (metrics: epoch_time_s, images_per_s, "
                   "lr, test_error, test_loss, train_error, train_loss, train_time_s)\n")
    code, out, _ = table(capsys, store, "--experiment", "*", "--rows", "tags.sweep", "--format", "csv")
    assert out.splitlines()[:2] == ["Model,Sweep,Test Error (median),Runs,Training Time (s)",
                                    "ResNet-preact-20,/outputs/multirun/lr-study,8.3,15,1500.0"]


# Figures: read back from the returned matplotlib Figure -------------------------------------------

def figure(store: Store, kind: str, *args: str):  # noqa: ANN201
    """The Figure `python -m analysis plot KIND ...` draws (captured instead of written: rendering
    is slow, and test_plots_are_written_as_png_and_svg writes files)."""
    from analysis import plots

    drawn = []
    save = plots.save
    try:
        plots.save = lambda fig, out: drawn.append(fig)
        code = cli.main(["plot", kind, "--tracking-uri", store.uri, *args])
    finally:
        plots.save = save
    assert code == 0
    (fig,) = drawn
    return fig


def legend(ax) -> list[str]:  # noqa: ANN001
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_param_lines_are_labelled_by_what_stays_the_same_along_them(store, tmp_path):
    fig = figure(store, "param", "--experiment", "resnet-depths", "--x", "model.depth", "--out", str(tmp_path / "d.png"))
    (ax,) = fig.axes
    assert legend(ax) == ["ResNet-preact, Cutout 16", "ResNet-preact"]  # not "ResNet-preact-8": depth is the x axis
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "14", "20"]
    cutout, standard = ([tuple(xy) for xy in c.lines[0].get_xydata()] for c in ax.containers)
    assert standard == [(8.0, 10.2), (14.0, 9.1), (20.0, 8.1)] and cutout == [(8.0, 9.2), (14.0, 8.1), (20.0, 7.1)]
    fig = figure(store, "param", "--experiment", "resnet-depths", "--x", "aug", "--out", str(tmp_path / "a.png"))
    assert legend(fig.axes[0]) == ["ResNet-preact-8", "ResNet-preact-14", "ResNet-preact-20"]  # lines over aug
    assert fig.axes[0].get_title().startswith("Test Error vs Augmentation\n")


def test_line_label_without_the_plotted_key():
    from analysis.labels import label_without

    assert label_without(params_for(model__depth="8"), "model.depth") == "ResNet-preact"
    assert label_without(params_for(model__widen="4"), "model.widen") == "ResNet-preact-20"
    assert label_without(params_for(model="wrn"), "model.widen") == "WRN-28-x"  # a label that needs the value
    assert label_without(params_for(aug="cutout"), "aug.cutout.size") == "ResNet-preact-20, Cutout"
    assert label_without(params_for(model="wrn", aug="cutout"), "model") == "Cutout 16"
    assert label_without(params_for(model="wrn"), "train.batch_size") == "WRN-28-10"


def test_x_that_does_not_vary_is_a_one_line_error(capsys, store, tmp_path):
    out = tmp_path / "x.png"
    code = cli.main(["plot", "param", "--tracking-uri", store.uri, "--experiment", "resnet-depths", "--x",
                     "train.epochs", "--out", str(out)])
    assert (code, capsys.readouterr().err) == (2, "analysis: error: --x: train.epochs does not vary among the "
                                                  "selected runs (its values: 4; keys that vary: model.depth, aug)\n")


# Colour vision deficiency: Machado et al. 2009 (severity 1) on linear RGB, distances in CIELAB.
_CVD = {
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
}


def _seen(color, deficiency: str):  # noqa: ANN001, ANN202
    """CIELAB of an sRGB colour as seen with the deficiency."""
    import numpy as np
    from matplotlib.colors import to_rgb

    c = np.array(to_rgb(color))
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    linear = np.clip(np.array(_CVD[deficiency]) @ linear, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    f = np.cbrt(xyz / [0.95047, 1.0, 1.08883])  # none of these colours is near black's linear segment
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _closest_pair(colors, deficiency: str) -> float:  # noqa: ANN001
    import itertools

    import numpy as np

    seen = [_seen(c, deficiency) for c in colors]
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(seen, 2))


def test_line_colours_stay_apart_for_red_green_colour_blindness(store, tmp_path):
    from matplotlib.colors import to_hex

    curves = figure(store, "curves", "--experiment", "lr-study", "--out", str(tmp_path / "c.png"))
    colors = [to_hex(line.get_color()) for line in curves.axes[0].get_lines()]
    assert len(set(colors)) == 5
    param = figure(store, "param", "--experiment", "lr-study", "--x", "optim.lr", "--out", str(tmp_path / "p.png"))
    colors_param = [to_hex(c.lines[0].get_color()) for c in param.axes[0].containers]
    assert len(colors_param) == 3
    for deficiency in _CVD:  # matplotlib's default tab10 has red and green: 4.6 / 7.2 apart here
        assert _closest_pair(colors, deficiency) > 12 and _closest_pair(colors_param, deficiency) > 12
    from analysis.plots import OKABE_ITO

    assert _closest_pair(OKABE_ITO, "deuteranopia") > 12 and _closest_pair(OKABE_ITO, "protanopia") > 12


def test_heatmap_colours_are_ordered_in_lightness_for_everyone(store, tmp_path):
    import numpy as np

    fig = figure(store, "heatmap", "--experiment", "lr-study", "--pivot", "train.batch_size", "optim.lr",
                 "--out", str(tmp_path / "h.png"))
    cmap = fig.axes[0].images[0].get_cmap()
    for deficiency in _CVD:  # low to high error = dark to light (red-yellow-green is not monotonic)
        lightness = [_seen(cmap(v), deficiency)[0] for v in np.linspace(0, 1, 11)]
        assert all(b > a for a, b in zip(lightness, lightness[1:])), (cmap.name, deficiency)


def test_every_figure_names_its_dataset_and_experiment(store, tmp_path):
    common = ["--experiment", "lr-study", "--out"]
    curves = figure(store, "curves", *common, str(tmp_path / "c.png")).axes[0].get_title()
    param = figure(store, "param", *common, str(tmp_path / "p.png"), "--x", "optim.lr").axes[0].get_title()
    heatmap = figure(store, "heatmap", *common, str(tmp_path / "h.png"), "--pivot", "train.batch_size",
                     "optim.lr")._suptitle.get_text()
    own = figure(store, "param", *common, str(tmp_path / "t.png"), "--x", "optim.lr", "--title", "LR scan")
    assert curves.splitlines()[1].startswith("CIFAR-10 · experiment lr-study (")
    assert param == ("Test Error vs Initial LR — ResNet-preact-20\n"
                     "CIFAR-10 · experiment lr-study (bars: min–max over runs)")
    assert heatmap.endswith("\nCIFAR-10 · experiment lr-study")
    assert own.axes[0].get_title() == "LR scan\nCIFAR-10 · experiment lr-study (bars: min–max over runs)"
    both = figure(store, "curves", "--experiment", "lr-study", "--experiment", "zoo", "--where", "model=wrn",
                  "--out", str(tmp_path / "z.png")).axes[0].get_title()
    assert "CIFAR-10 · experiments lr-study, zoo" not in both  # only experiments with selected runs are named
    assert "CIFAR-10 · experiment zoo" in both


def test_min_max_bands_stay_readable_with_many_configurations(store, tmp_path):
    from matplotlib.collections import PolyCollection

    def bands(*args: str) -> list[float]:
        fig = figure(store, "curves", "--experiment", "lr-study", "--out", str(tmp_path / "c.png"), *args)
        return [c.get_alpha() for c in fig.axes[0].collections if isinstance(c, PolyCollection)]

    assert bands() == []  # 5 configurations: medians only, the title says so
    assert bands("--bands") == [0.1] * 4  # asked for: faint (the 1-run configuration has none)
    assert bands("--where", "train.batch_size=128") == [0.2] * 3  # up to 3 configurations: bands by default
    assert bands("--where", "train.batch_size=128", "--no-bands") == []
    fig = figure(store, "curves", "--experiment", "lr-study", "--out", str(tmp_path / "c.png"))
    assert fig.axes[0].get_title().endswith("(line: median over runs)")
    assert len({line.get_linestyle() for line in fig.axes[0].get_lines()}) == 1  # 5 colours suffice


def test_each_plot_kind_has_its_own_help(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["plot", "curves", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert out.startswith("usage: python -m analysis plot curves ")
    assert "--bands, --no-bands" in out and "--experiment NAME" in out and "--x KEY" not in out
    with pytest.raises(SystemExit):
        cli.main(["plot", "param", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m analysis plot param ") and "--x KEY" in out and "--bands" not in out
    with pytest.raises(SystemExit):
        cli.main(["plot", "heatmap", "--help"])
    assert "--pivot ROWKEY COLKEY" in capsys.readouterr().out
