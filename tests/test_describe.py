"""`python -m cifarzoo.describe`: params and MACs of the composed model."""

from __future__ import annotations

import json

import torch

from cifarzoo import describe


def test_macs_count_convolutions_and_linear_layers():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32, 5)
    )
    assert describe.count_macs(model, (1, 4, 4)) == 4 * 4 * 2 * 9 + 32 * 5


def test_default_model_is_resnet_preact_20_with_its_known_size(capsys):
    assert describe.main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "params: 272282" in out
    macs = int(next(line for line in out if line.startswith("macs: ")).split()[1])
    assert round(macs / 1e6) == 41  # ResNet-20: ~41M multiply-accumulates per 32x32 image


def test_json_follows_the_overrides_and_the_dataset_shape(capsys):
    assert describe.main(["--json", "model.depth=8", "data=mnist"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "resnet_preact" and info["input"] == [1, 28, 28]
    assert info["params"] < 272282 and info["macs"] > 0
    assert describe.main(["--json", "model.depth=8", "data=cifar100"]) == 0
    stem, classifier = 16 * 3 * 3 * (3 - 1), (64 + 1) * (100 - 10)  # 3 input channels, 100 classes
    assert json.loads(capsys.readouterr().out)["params"] == info["params"] + stem + classifier


def test_bad_overrides_are_one_line_errors(capsys):
    assert describe.main(["model.depth=7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cifarzoo: error: model.depth: ") and "\n" not in err
    assert describe.main(["model=no_such_model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cifarzoo: error: overrides: ") and "model/no_such_model" in err and "\n" not in err
