"""Human names: model labels in the seeds' style, column headers, values and durations.

A label function returns the text and the param keys it encodes, so that a key the label
already shows is not repeated as a column. Every key may be missing (models and augmentations
are added by other people over time): a label uses what it finds."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping

Params = Mapping[str, str]

HEADERS = {
    "model": "Model",
    "data": "Dataset",
    "aug": "Augmentation",
    "optim": "Optimizer",
    "precision": "Precision",
    "sched": "LR schedule",
    "seed": "Seed",
    "train.batch_size": "Batch size",
    "train.epochs": "# of Epochs",
    "train.eval_every": "Evaluated every (epochs)",
    "optim.lr": "Initial LR",
    "optim.momentum": "Momentum",
    "optim.nesterov": "Nesterov",
    "optim.weight_decay": "Weight decay",
    "sched.milestones": "LR milestones",
    "sched.gamma": "LR decay factor",
    "sched.lr_min_factor": "Final LR factor",
    "sched.warmup_epochs": "Warmup epochs",
    "data.train_size": "Training images",
    "data.test_size": "Test images",
    "model.depth": "Depth",
    "model.widen": "Widening factor",
    "model.base_channels": "Base channels",
    "model.remove_first_relu": "w/o 1st ReLU",
    "model.add_last_bn": "w/ last BN",
    "model.preact_stage": "Preactivate shortcut after downsampling",
    "model.drop_rate": "Dropout",
    "model.norm": "Normalization",
    "model.activation": "Activation",
    "model.se_reduction": "SE reduction",
    "model.shortcut": "Shortcut",
    "model.num_params": "# of params",
    "aug.cutout.size": "Cutout size",
    "aug.mixup.alpha": "Mixup alpha",
    "train.ghost_batch_size": "Ghost batch size",
    "train.world_size": "# of processes",
    "train.distributed": "Data-parallel",
    "aug.crop.padding": "Crop padding",
    "aug.flip.prob": "Flip probability",
}

METRICS = {
    "test_error": "Test Error",
    "best_test_error": "Best Test Error",
    "best_test_error_epoch": "Best Epoch",
    "train_error": "Train Error",
    "test_loss": "Test Loss",
    "train_loss": "Train Loss",
    "lr": "Learning Rate",
    "epoch_time_s": "Epoch Time (s)",
    "images_per_s": "Images/s",
    "train_time_s": "Training Time (s)",
}

VALUES = {
    "data": {
        "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST",
        "kmnist": "KMNIST", "svhn": "SVHN", "fake": "synthetic",
    },
    "precision": {"fp32": "FP32", "amp_bf16": "AMP bf16", "amp_fp16": "AMP fp16", "fp16": "FP16"},
    "model.activation": {"relu": "ReLU", "leaky_relu": "Leaky ReLU", "celu": "CELU", "gelu": "GELU"},
    "model.norm": {"batch": "Batch Norm", "instance": "Instance Norm", "layer": "Layer Norm", "group": "Group Norm"},
    "optim": {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "lars": "LARS", "lamb": "LAMB", "sam": "SAM", "asam": "ASAM",
              "amsgrad": "AMSGrad", "adabound": "AdaBound"},
}


def header(key: str) -> str:
    """`train.batch_size` -> `Batch size`; unknown keys: their last part, in words."""
    if key in HEADERS:
        return HEADERS[key]
    if key.startswith("metrics."):
        return metric_name(key[len("metrics."):])
    words = key.rsplit(".", 1)[-1].replace("_", " ")
    return words[:1].upper() + words[1:]


def metric_name(metric: str) -> str:
    return METRICS.get(metric, header(metric))


def metric_axis(metric: str) -> str:
    """Axis label: errors are in percent (the tracker logs them so)."""
    name = metric_name(metric)
    return f"{name} (%)" if metric.endswith("_error") else name


def display_value(key: str, value: str) -> str:
    if value in ("", "None", "nan"):
        return "-"
    return VALUES.get(key, {}).get(value, value)


def _get(params: Params, key: str) -> str:
    """The param as label text: "" when missing, `1.0` as `1`."""
    value = params.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value)
    return text[:-2] if text.endswith(".0") and text[:-2].lstrip("-").isdigit() else text


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _truthy(text: str) -> bool:
    return text.lower() in ("true", "1", "yes")


def _nonzero(text: str) -> bool:
    number = _number(text)
    return number is not None and number > 0


# Model labels ---------------------------------------------------------------------------------

def _resnet_like(name: str) -> Callable[[Params], tuple[str, set[str]]]:
    def label(p: Params) -> tuple[str, set[str]]:
        text = f"{name}-{_get(p, 'model.depth')}" if _get(p, "model.depth") else name
        if _get(p, "model.block") == "bottleneck":
            text += " bottleneck"
        widen = _get(p, "model.widen")
        if widen and _number(widen) != 1:
            text += f", widening factor {widen}"
        return text, {"model.depth", "model.block", "model.widen"}

    return label


def _wrn(p: Params) -> tuple[str, set[str]]:
    text = f"WRN-{_get(p, 'model.depth') or '?'}-{_get(p, 'model.widen') or '?'}"
    if _nonzero(_get(p, "model.drop_rate")):
        text += f" w/ dropout (p={_get(p, 'model.drop_rate')})"
    return text, {"model.depth", "model.widen", "model.drop_rate"}


def _densenet(p: Params) -> tuple[str, set[str]]:
    bottleneck = _get(p, "model.block") == "bottleneck"
    compression = _number(_get(p, "model.compression"))
    compressed = compression is not None and compression < 1
    kind = ("B" if bottleneck else "") + ("C" if compressed else "")
    text = f"DenseNet-{kind + '-' if kind else ''}{_get(p, 'model.depth') or '?'}"
    if _get(p, "model.growth_rate"):
        text += f" (k={_get(p, 'model.growth_rate')})"
    if _nonzero(_get(p, "model.drop_rate")):
        text += f" w/ dropout (p={_get(p, 'model.drop_rate')})"
    keys = {"model.depth", "model.block", "model.growth_rate", "model.drop_rate"}
    # compression is shown only as "C": exact values other than 0.5 stay a column.
    if compression is None or compression in (0.5, 1.0):
        keys.add("model.compression")
    return text, keys


def _pyramidnet(p: Params) -> tuple[str, set[str]]:
    text = f"PyramidNet-{_get(p, 'model.depth') or '?'}"
    if _get(p, "model.block") == "bottleneck":
        text += " bottleneck"
    if _get(p, "model.alpha"):
        text += f" (alpha={_get(p, 'model.alpha')})"
    if _nonzero(_get(p, "model.shakedrop_prob")):
        text += f" w/ ShakeDrop (p={_get(p, 'model.shakedrop_prob')})"
    return text, {"model.depth", "model.block", "model.alpha", "model.shakedrop_prob"}


def _resnext(p: Params) -> tuple[str, set[str]]:
    text = f"ResNeXt-{_get(p, 'model.depth') or '?'}"
    if _get(p, "model.cardinality") and _get(p, "model.base_channels"):
        text += f" {_get(p, 'model.cardinality')}x{_get(p, 'model.base_channels')}d"
    return text, {"model.depth", "model.cardinality", "model.base_channels"}


_SHAKE = {"shake": "S", "even": "E", "keep": "K", "true": "S", "false": "E"}
_LEVEL = {"image": "I", "batch": "B"}


def _shake_shake(p: Params) -> tuple[str, set[str]]:
    """`shake-shake-26 2x32d (S-S-I)`: forward, backward (Shake/Even/Keep), level (Batch/Image)
    as in the shake-shake paper's table; grouped branches as `2x4x64d`."""
    width = _get(p, "model.base_channels")
    cardinality = _get(p, "model.cardinality")
    if cardinality and cardinality != "1":
        width = f"{cardinality}x{width}"
    text = f"shake-shake-{_get(p, 'model.depth') or '?'}"
    if width:
        text += f" 2x{width}d"
    forward = _SHAKE.get(_get(p, "model.shake_forward").lower())
    backward = _SHAKE.get(_get(p, "model.shake_backward").lower())
    level = _LEVEL.get(_get(p, "model.shake_level").lower())
    if not level and _get(p, "model.shake_image"):
        level = "I" if _truthy(_get(p, "model.shake_image")) else "B"
    if forward and backward and level:
        text += f" ({forward}-{backward}-{level})"
    keys = {"model.depth", "model.base_channels", "model.cardinality", "model.shake_forward",
            "model.shake_backward", "model.shake_level", "model.shake_image"}
    return text, keys


def _vgg(p: Params) -> tuple[str, set[str]]:
    """hysts' "VGG-like (depth 15, w/ BN, channel 64)": depth counts the conv layers + 2."""
    parts = []
    depth = _get(p, "model.depth")
    if not depth and _get(p, "model.layers"):
        try:
            depth = str(sum(json.loads(_get(p, "model.layers"))) + 2)
        except (ValueError, TypeError):
            depth = ""
    if depth:
        parts.append(f"depth {depth}")
    if _get(p, "model.batch_norm"):
        parts.append("w/ BN" if _truthy(_get(p, "model.batch_norm")) else "w/o BN")
    channels = _get(p, "model.base_channels")
    if not channels and _get(p, "model.channels"):
        try:
            channels = str(json.loads(_get(p, "model.channels"))[0])
        except (ValueError, TypeError, IndexError, KeyError):
            channels = ""
    if channels:
        parts.append(f"channel {channels}")
    text = f"VGG-like ({', '.join(parts)})" if parts else "VGG-like"
    return text, {"model.depth", "model.layers", "model.batch_norm", "model.base_channels", "model.channels"}


def _named(fmt: str, *keys: str) -> Callable[[Params], tuple[str, set[str]]]:
    """Architecture-study models: "ResNet-{depth}" filled from `model.<key>`."""

    def label(p: Params) -> tuple[str, set[str]]:
        values = {k: _get(p, f"model.{k}") or "?" for k in keys}
        text = fmt.format(**values)
        widen = _get(p, "model.widen")
        if widen and _number(widen) != 1:
            text += f", widening factor {widen}"
        if _get(p, "model.batch_norm") and not _truthy(_get(p, "model.batch_norm")):
            text += " w/o BN"
        return text, {f"model.{k}" for k in keys} | {"model.widen", "model.batch_norm"}

    return label


MODELS: dict[str, Callable[[Params], tuple[str, set[str]]]] = {
    "resnet_preact": _resnet_like("ResNet-preact"),
    "se_resnet_preact": _resnet_like("SE-ResNet-preact"),
    "resnet": _resnet_like("ResNet"),
    "wrn": _wrn,
    "densenet": _densenet,
    "pyramidnet": _pyramidnet,
    "resnext": _resnext,
    "shake_shake": _shake_shake,
    "vgg": _vgg,
    "vgg16": _named("VGG-16"),
    "resnet_imagenet_style": _named("ResNet-{depth}", "depth"),
    "resnext_small": _named("ResNeXt-{depth} ({cardinality} groups)", "depth", "cardinality"),
    "densenet121": _named("DenseNet-121 (k={growth_rate})", "growth_rate"),
    "convmixer": _named("ConvMixer-{dim}/{depth}", "dim", "depth"),
    "lenet": _named("LeNet"),
    "senet18": _named("SENet-{depth}", "depth"),
    "preact_resnet18": _named("PreActResNet-{depth}", "depth"),
    "regnet": _named("RegNet{variant}", "variant"),
    "dla": _named("DLA"),
    "googlenet": _named("GoogLeNet"),
    "efficientnet_b0": _named("EfficientNet-B0"),
    "mobilenet": _named("MobileNet"),
    "mobilenetv2": _named("MobileNetV2"),
    "pnasnet": _named("PNASNet"),
    "dpn": _named("DPN-{variant}", "variant"),
    "spp_resnet": _named("spp_d{depth}_p{pooling}", "depth", "pooling"),  # the tricks seed's names
}


def model_label(params: Params) -> tuple[str, set[str]]:
    """("ResNet-preact-20, widening factor 4", keys it encodes) from a run's params."""
    choice = _get(params, "model")
    if choice in MODELS:
        text, keys = MODELS[choice](params)
    elif _get(params, "model.depth"):
        text, keys = f"{choice or 'model'}-{_get(params, 'model.depth')}", {"model.depth"}
    else:
        text, keys = choice or "?", set()
    return text, keys | {"model"}


# Augmentation labels --------------------------------------------------------------------------

def _with(name: str, key: str, fmt: str) -> Callable[[Params], tuple[str, set[str]]]:
    def label(p: Params) -> tuple[str, set[str]]:
        value = _get(p, key)
        return (f"{name}{fmt.format(value)}" if value else name), {key}

    return label


def _dual_cutout(p: Params) -> tuple[str, set[str]]:
    """The seeds' "dual-cutout 16 (alpha=0.1)"."""
    size, alpha = _get(p, "aug.dual_cutout.size"), _get(p, "aug.dual_cutout.alpha")
    text = "dual-cutout" + (f" {size}" if size else "") + (f" (alpha={alpha})" if alpha else "")
    return text, {"aug.dual_cutout.size", "aug.dual_cutout.alpha"}



def _ricap(p: Params) -> tuple[str, set[str]]:
    """"RICAP (beta=0.3)", and ", random crop" for the seeds' rows that keep the crop."""
    text, keys = _with("RICAP", "aug.ricap.beta", " (beta={})")(p)
    return text + (", random crop" if _get(p, "aug.random_crop") == "True" else ""), keys | {"aug.random_crop"}


AUGS: dict[str, Callable[[Params], tuple[str, set[str]]]] = {
    "standard": lambda p: ("", set()),
    "none": lambda p: ("no augmentation", set()),
    "cutout": _with("Cutout", "aug.cutout.size", " {}"),
    "random_erasing": lambda p: ("RandomErasing", set()),
    "mixup": _with("Mixup", "aug.mixup.alpha", " (alpha={})"),
    "cutmix": _with("CutMix", "aug.cutmix.alpha", " (alpha={})"),
    "ricap": _ricap,
    "autoaugment": lambda p: ("AutoAugment", set()),
    "randaugment": lambda p: ("RandAugment", set()),
    "random_resized_crop": lambda p: ("RandomResizedCrop", set()),
    "label_smoothing": _with("label smoothing", "aug.label_smoothing.epsilon", " ({})"),
    "dual_cutout": _dual_cutout,
}



def aug_label(params: Params) -> tuple[str, set[str]]:
    """`cutout+mixup` -> "Cutout 16, Mixup (alpha=1)"; the standard crop+flip says nothing."""
    choice = _get(params, "aug")
    names = [n for n in choice.split("+") if n] if choice else []
    if len(names) > 1:
        names = [n for n in names if n not in ("standard", "none")] or names[:1]
    parts, keys = [], {"aug"}
    for name in names:
        text, used = AUGS[name](params) if name in AUGS else (name, set())
        keys |= used
        if text:
            parts.append(text)
    return ", ".join(parts), keys


def label(params: Params) -> tuple[str, set[str]]:
    """The seeds' model column: "ResNet-preact-20, widening factor 4, Cutout 16"."""
    model, model_keys = model_label(params)
    aug, aug_keys = aug_label(params)
    return (f"{model}, {aug}" if aug else model), model_keys | aug_keys


def label_without(params: Params, key: str) -> str:
    """The label of what stays the same while `key` varies (a plot's line over `key`): "ResNet-preact"
    over depths 8 and 14, "ResNet-preact-20, Cutout" over Cutout sizes. A label that cannot leave
    the value out ("WRN-?-10") shows it as `x`, the plot's axis: "WRN-x-10"."""
    if key == "model":
        return aug_label(params)[0]
    if key == "aug":
        return model_label(params)[0]
    rest = {k: v for k, v in params.items() if k != key}
    text = label(rest)[0]
    if "?" in text and "?" not in label(params)[0]:
        text = label({**rest, key: "x"})[0]
    return text


def format_duration(seconds: float | None) -> str:
    """Training time as in the seeds: `45s`, `38m`, `3h06m`."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if round(seconds) < 60:
        return f"{round(seconds)}s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m"
