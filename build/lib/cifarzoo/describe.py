"""`python -m cifarzoo.describe [overrides] [--json]`: a model's size before you sweep it.

Composes the config exactly as `run.py` does (same overrides, e.g. `model=wrn model.depth=28
model.widen=10 data=cifar10`), builds the model for the dataset's channels, classes and image
size, and prints its trainable parameters and the multiply-accumulates of one forward pass
of one image (convolutions and linear layers, as counted by torch's FlopCounterMode / 2)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from cifarzoo.compose import compose_with_choices, one_line_errors
from cifarzoo.config import build, build_model
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters


def count_macs(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one eval-mode forward pass on one image of `input_shape`."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_shape))
    return counter.get_total_flops() // 2


def describe(overrides: Sequence[str]) -> dict[str, object]:
    with one_line_errors():
        cfg, choices = compose_with_choices(overrides)
    dataset = build(cfg.data)
    model = build_model(cfg.model, dataset.channels, dataset.num_classes)
    shape = (dataset.channels, dataset.image_size, dataset.image_size)
    return {
        "params": count_parameters(model),
        "macs": count_macs(model, shape),
        "model": choices.get("model", type(model).__name__),
        "data": choices.get("data", ""),
        "input": list(shape),
        "num_classes": dataset.num_classes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarzoo.describe", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for run.py")
    args = parser.parse_intermixed_args(argv)
    try:
        info = describe(args.overrides)
    except ConfigError as error:
        print(f"cifarzoo: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info))
    else:
        print(f"model: {info['model']} on {info['data']} {'x'.join(map(str, info['input']))}, {info['num_classes']} classes")
        print(f"params: {info['params']}")
        print(f"macs: {info['macs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
