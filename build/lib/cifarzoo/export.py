"""A trained network as a model others can run: images in [0, 1] in, logits out.

`Classifier` wraps a network with its dataset's per-channel normalisation, so a user feeds
float32 images of shape (N, C, H, W) with values in [0, 1] (uint8 pixels / 255, channels in the
dataset's order: RGB for CIFAR/SVHN, grey for the MNIST family) and gets (N, classes) logits
(softmax for probabilities). The exported files and the MLflow model a finished run logs are
this module, float32, in eval mode, on the CPU; only `state_dict` saves the bare network.

Formats (`python -m cifarzoo.evaluate RUN --export FORMAT PATH`), each loadable without cifarzoo:
- `torchscript`: `torch.jit.trace` of the Classifier; `torch.jit.load(PATH)`. PyTorch deprecates
  TorchScript in favour of torch.export (`pt2`), but still loads it.
- `pt2`: a `torch.export` ExportedProgram with a dynamic batch; `torch.export.load(PATH).module()`.
- `onnx`: torch's ONNX exporter (dynamo), one file, input `images`, output `logits`, dynamic
  batch (needs `onnx` and `onnxscript`: `pip install 'cifarzoo[export]'`); run it with onnxruntime.
- `state_dict`: `torch.save` of the bare network's state dict (normalised images in), with
  `PATH.json` beside it: the model config, mean/std and how to rebuild the network."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarzoo.errors import ConfigError


class Classifier(nn.Module):
    """`network((images - mean) / std)`: images in [0, 1], logits out (see the module docstring)."""

    def __init__(self, network: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((images - self.mean) / self.std)


def float32_copy(network: nn.Module) -> nn.Module:
    """A float32, eval-mode CPU copy of a network as it trained (channels-last, half under
    `precision=fp16`, whose input cast hook goes: the copy takes float32 inputs)."""
    from cifarzoo.precision import _inputs_to_half

    net = copy.deepcopy(network).float().cpu().eval()
    for key, hook in list(net._forward_pre_hooks.items()):
        if hook is _inputs_to_half:
            del net._forward_pre_hooks[key]
    return net.to(memory_format=torch.contiguous_format)


def deployable(network: nn.Module, mean: Sequence[float], std: Sequence[float]) -> Classifier:
    """The Classifier of a float32 CPU copy of `network`, in eval mode."""
    return Classifier(float32_copy(network), mean, std).eval()


def example_input(shape: Sequence[int], batch: int = 2) -> torch.Tensor:
    """A fixed [0, 1] batch of `shape` (C, H, W) to trace with."""
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))


def _torchscript(model: Classifier, path: Path, shape: Sequence[int], note: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=FutureWarning)
        traced = torch.jit.trace(model, example_input(shape))
        traced.save(str(path))


def _dynamic_batch() -> dict[str, dict[int, Any]]:
    return {"images": {0: torch.export.Dim("batch", min=1)}}


def _pt2(model: Classifier, path: Path, shape: Sequence[int], note: dict[str, Any]) -> None:
    program = torch.export.export(model, (example_input(shape),), dynamic_shapes=_dynamic_batch())
    torch.export.save(program, str(path))


def _onnx(model: Classifier, path: Path, shape: Sequence[int], note: dict[str, Any]) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ConfigError("--export", f"onnx needs the onnx and onnxscript packages ({error}); "
                          "pip install 'cifarzoo[export]'", "onnx") from None
    torch.onnx.export(model, (example_input(shape),), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_shapes=_dynamic_batch(), dynamo=True, external_data=False, verbose=False)


def _state_dict(model: Classifier, path: Path, shape: Sequence[int], note: dict[str, Any]) -> None:
    torch.save(model.network.state_dict(), path)
    Path(f"{path}.json").write_text(json.dumps({
        **note,
        "input": f"float32 (N, {', '.join(map(str, shape))}) normalised per channel: (images in [0, 1] - mean) / std",
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        "rebuild": ["note = json.load(open(PATH + '.json'))",
                    "net = cifarzoo.config.build_model(omegaconf.OmegaConf.create(note['model']), note['in_channels'], "
                    "note['num_classes'])",
                    "net.load_state_dict(torch.load(PATH, weights_only=True)); net.eval()",
                    "logits = net((images - torch.tensor(note['mean']).view(1, -1, 1, 1)) / torch.tensor(note['std']).view(1, -1, 1, 1))"],
    }, indent=2))


EXPORTERS: dict[str, Callable[[Classifier, Path, Sequence[int], dict[str, Any]], None]] = {
    "torchscript": _torchscript,
    "pt2": _pt2,
    "onnx": _onnx,
    "state_dict": _state_dict,
}


def export(model: Classifier, fmt: str, path: Path, shape: Sequence[int], note: dict[str, Any]) -> None:
    """Write `model` (a Classifier taking (N, *shape) images) to `path` as `fmt` (one of
    EXPORTERS); `note` (the model config, classes, source run) goes beside a state dict."""
    if fmt not in EXPORTERS:
        raise ConfigError("--export", f"must be one of {', '.join(EXPORTERS)}", fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        EXPORTERS[fmt](model.eval(), path, shape, note)
