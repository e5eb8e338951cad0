"""AutoAugment and RandAugment as batched blocks: every image draws its own sub-policy or ops,
probabilities and signs from the generator, and each op runs once per slot on the images that drew it.

AutoAugment: Cubuk, Zoph, Mane, Vasudevan, Le, "AutoAugment: Learning Augmentation Strategies from
Data", CVPR 2019 (arXiv:1805.09501). RandAugment: Cubuk, Zoph, Shlens, Le, "RandAugment: Practical
automated data augmentation with a reduced search space", CVPR Workshops 2020 (arXiv:1909.13719).

Both follow torchvision.transforms.v2.AutoAugment / RandAugment (nearest interpolation, fill 0) rather
than the papers' TensorFlow code, so they inherit torchvision's departures from it: the enhance ops'
factors are 1 +- 0.9 * bin / 9 with a random sign (the TF code scales bins to 0.1..1.9, no sign),
translations scale to 150/331 of the image size (14.5 px on 32 px images; the TF CIFAR code scales
to 10 px), and the posterize / solarize bins are torchvision's. Shears are about the top-left corner
as in both; translations and rotations about the centre. The ops are in cifarzoo.aug.ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from cifarzoo.aug import ops
from cifarzoo.aug.base import Block
from cifarzoo.errors import is_int, require

# Each op as torchvision's AutoAugment applies it, given its signed magnitude per image.
OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Identity": lambda x, m: x,
    "ShearX": ops.shear_x,
    "ShearY": ops.shear_y,
    "TranslateX": lambda x, m: ops.translate_x(x, m.trunc()),  # torchvision: int(magnitude)
    "TranslateY": lambda x, m: ops.translate_y(x, m.trunc()),
    "Rotate": ops.rotate,
    "Brightness": lambda x, m: ops.brightness(x, 1 + m),
    "Color": lambda x, m: ops.color(x, 1 + m),
    "Contrast": lambda x, m: ops.contrast(x, 1 + m),
    "Sharpness": lambda x, m: ops.sharpness(x, 1 + m),
    "Posterize": lambda x, m: ops.posterize(x, m.long()),
    "Solarize": lambda x, m: ops.solarize(x, 255 * m),
    "AutoContrast": lambda x, m: ops.auto_contrast(x),
    "Equalize": lambda x, m: ops.equalize(x),
    "Invert": lambda x, m: ops.invert(x),
}

SIGNED = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"})


def magnitude_bins(op: str, num_bins: int, height: int, width: int) -> torch.Tensor:
    """torchvision's magnitudes (unsigned) for `op`, as float64; zeros for ops without one.
    Computed in float32 first as torchvision does, so that the values are bit-identical."""
    top = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150.0 / 331.0 * width, "TranslateY": 150.0 / 331.0 * height,
           "Rotate": 30.0, "Brightness": 0.9, "Color": 0.9, "Contrast": 0.9, "Sharpness": 0.9}
    if op in top:
        bins = torch.linspace(0.0, top[op], num_bins)
    elif op == "Posterize":  # bits, 8 down to 4
        bins = (8 - torch.arange(num_bins) / ((num_bins - 1) / 4)).round()
    elif op == "Solarize":  # threshold as a fraction of 255, 1 down to 0
        bins = torch.linspace(1.0, 0.0, num_bins)
    else:
        bins = torch.zeros(num_bins)
    return bins.to(torch.float64)


class Plan(NamedTuple):
    """What a batch will get, per op slot (rows) and image (columns)."""

    ops: torch.Tensor  # int64 (slots, B): index into the policy's `op_names`
    magnitudes: torch.Tensor  # float64 (slots, B): the signed magnitude torchvision would pass
    applied: torch.Tensor  # bool (slots, B): False where the slot's op is skipped


class _Policy(Block):
    op_names: tuple[str, ...] = ()
    num_bins: int = 10
    graph_unsupported = ("autoaugment/randaugment pick each op's images with nonzero() (data-dependent shapes, "
                         "a host sync), which a CUDA graph cannot capture")

    def __init__(self) -> None:
        self._tables: dict[tuple[int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _table(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(ops, bins) float64 magnitudes and (ops,) bool "signed", on `device`, cached per image size."""
        key = (height, width, device)
        if key not in self._tables:
            table = torch.stack([magnitude_bins(op, self.num_bins, height, width) for op in self.op_names])
            signed = torch.tensor([op in SIGNED for op in self.op_names])
            self._tables[key] = table.to(device), signed.to(device)
        return self._tables[key]

    def _signed_magnitudes(self, images: torch.Tensor, op: torch.Tensor, bin: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Magnitude per (slot, image) of op `op` at bin `bin`, negated with probability 1/2 where signed."""
        table, signed = self._table(images.shape[2], images.shape[3], images.device)
        negative = torch.rand(op.shape, device=images.device, generator=generator) <= 0.5
        magnitudes = table[op, bin]
        return torch.where(negative & signed[op], -magnitudes, magnitudes)

    def sample(self, images: torch.Tensor, generator: torch.Generator) -> Plan:
        raise NotImplementedError

    def apply(self, images: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Run the plan's slots in order; in each, every op once on the images that drew it."""
        out = images.clone()
        for slot_ops, slot_magnitudes, slot_applied in zip(plan.ops, plan.magnitudes, plan.applied):
            for index, name in enumerate(self.op_names):
                if name == "Identity":
                    continue
                chosen = (slot_applied & (slot_ops == index)).nonzero().squeeze(1)
                if len(chosen):
                    out[chosen] = OPS[name](out[chosen], slot_magnitudes[chosen])
        return out

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, self.sample(images, generator))


# AutoAugmentPolicy.CIFAR10 of torchvision: (op, probability, magnitude bin of 10) per slot, as in the
# paper's appendix (the policy found on reduced CIFAR-10).
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)


class AutoAugment(_Policy):
    """AutoAugment with the CIFAR-10 policy (Cubuk et al., CVPR 2019): each image draws one of the 25
    sub-policies, then runs each of its two ops with the op's probability, at the op's magnitude bin
    with a random sign for the signed ops. Same distribution as torchvision's
    AutoAugment(AutoAugmentPolicy.CIFAR10), drawn per image instead of per call."""

    op_names = tuple(name for name in OPS if name != "Identity")
    num_bins = 10

    def __init__(self) -> None:
        super().__init__()
        # (25, 2) tables: op index, probability and magnitude bin of each sub-policy's two slots.
        self._ops = torch.tensor([[self.op_names.index(op) for op, _, _ in pair] for pair in CIFAR10_POLICY])
        self._probabilities = torch.tensor([[p for _, p, _ in pair] for pair in CIFAR10_POLICY])
        self._bins = torch.tensor([[b or 0 for _, _, b in pair] for pair in CIFAR10_POLICY])

    def sample(self, images: torch.Tensor, generator: torch.Generator) -> Plan:
        device = images.device
        choice = torch.randint(len(CIFAR10_POLICY), (images.shape[0],), device=device, generator=generator)
        op = self._ops.to(device)[choice].T  # (2, B)
        applied = torch.rand(op.shape, device=device, generator=generator) <= self._probabilities.to(device)[choice].T
        magnitudes = self._signed_magnitudes(images, op, self._bins.to(device)[choice].T, generator)
        return Plan(op, magnitudes, applied)


class RandAugment(_Policy):
    """RandAugment (Cubuk et al., CVPR Workshops 2020): each image runs `num_ops` ops drawn uniformly
    and independently from the 14 of torchvision's RandAugment (Identity included), all at magnitude
    bin `magnitude` of `num_magnitude_bins`, with a random sign for the signed ops. Same distribution
    as torchvision's RandAugment, drawn per image instead of per call; unlike torchvision, num_ops = 0
    is refused (use aug=standard for no policy)."""

    op_names = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31) -> None:
        super().__init__()
        require(is_int(num_ops) and num_ops >= 1, "aug.randaugment.num_ops", "must be an int >= 1", num_ops)
        require(is_int(num_magnitude_bins) and num_magnitude_bins >= 2, "aug.randaugment.num_magnitude_bins",
                "must be an int >= 2", num_magnitude_bins)
        require(is_int(magnitude) and 0 <= magnitude < num_magnitude_bins, "aug.randaugment.magnitude",
                f"must be an int in [0, num_magnitude_bins - 1 = {num_magnitude_bins - 1}]", magnitude)
        self.num_ops, self.magnitude, self.num_bins = num_ops, magnitude, num_magnitude_bins

    def sample(self, images: torch.Tensor, generator: torch.Generator) -> Plan:
        device = images.device
        shape = (self.num_ops, images.shape[0])
        op = torch.randint(len(self.op_names), shape, device=device, generator=generator)
        magnitudes = self._signed_magnitudes(images, op, torch.full_like(op, self.magnitude), generator)
        return Plan(op, magnitudes, torch.ones(shape, dtype=torch.bool, device=device))
