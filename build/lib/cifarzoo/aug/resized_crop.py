"""RandomResizedCrop (Szegedy et al. 2015, torchvision's `RandomResizedCrop`), per image, batched.

Each image gets its own box, drawn as torchvision's `RandomResizedCrop.get_params` draws it,
and the box is resized back to the image size with bilinear interpolation (half-pixel centres,
`align_corners=False`), as torchvision's `resized_crop` does for a tensor image. The whole
batch is done with fixed shapes and no host sync, so the block can be captured in a CUDA graph:

- torchvision tries up to 10 boxes per image and takes the first that fits in the image,
  falling back to a central crop of the image clipped to the ratio range. Here all 10 draws are
  made for every image and the first that fits is selected on the device; the distribution of
  the chosen box is the same, the random stream is not torchvision's (which draws per image in
  Python).
- The bilinear resize gathers the two source rows and columns of each output pixel from the
  image's own box, with the weights of PyTorch's bilinear kernel, and rounds back to uint8 as
  torchvision does. A box is never larger than the image, so the resize only ever upsamples and
  torchvision's antialias option has no effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from cifarzoo.aug.base import Block
from cifarzoo.aug.boxes import memory_format_of, uniform
from cifarzoo.errors import is_int, require

KEY = "aug.random_resized_crop"


def _is_pair(value: object) -> bool:
    return (isinstance(value, Sequence) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def _shown(value: object) -> object:
    return list(value) if isinstance(value, Sequence) else value


class RandomResizedCrop(Block):
    """A box of `scale` x the image area and aspect ratio (w / h) in `ratio` (log-uniform), resized
    back to the image size. Defaults are torchvision's: scale (0.08, 1), ratio (3/4, 4/3)."""

    def __init__(self, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 max_attempt: int = 10) -> None:
        require(_is_pair(scale) and 0.0 < scale[0] <= scale[1] <= 1.0, f"{KEY}.scale",
                "must be [low, high] with 0 < low <= high <= 1", _shown(scale))
        require(_is_pair(ratio) and 0.0 < ratio[0] <= ratio[1], f"{KEY}.ratio",
                "must be [low, high] with 0 < low <= high", _shown(ratio))
        require(is_int(max_attempt) and max_attempt >= 1, f"{KEY}.max_attempt", "must be an int >= 1", max_attempt)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.max_attempt = max_attempt

    def boxes(self, b: int, h: int, w: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """(top, left, height, width) per image, int64 tensors of shape (b,): torchvision's
        `get_params` rule for an h x w image, for all images at once."""
        device = generator.device
        shape = (b, self.max_attempt)
        area = uniform(shape, *self.scale, generator) * (h * w)
        aspect = torch.exp(uniform(shape, math.log(self.ratio[0]), math.log(self.ratio[1]), generator))
        box_w = torch.round(torch.sqrt(area * aspect)).long()
        box_h = torch.round(torch.sqrt(area / aspect)).long()
        fits = (box_w > 0) & (box_w <= w) & (box_h > 0) & (box_h <= h)
        first = fits.long().argmax(dim=1, keepdim=True)  # the first attempt that fits (0 if none does)
        any_fits = fits.any(dim=1)
        fallback_h, fallback_w = self.fallback(h, w)
        box_h = torch.where(any_fits, box_h.gather(1, first)[:, 0], fallback_h)
        box_w = torch.where(any_fits, box_w.gather(1, first)[:, 0], fallback_w)
        # torchvision: randint(0, h - box_h + 1) for a fitting box; the centre for the fallback
        u_top = torch.rand(b, device=device, generator=generator)
        u_left = torch.rand(b, device=device, generator=generator)
        top = torch.where(any_fits, (u_top * (h - box_h + 1)).floor().long().clamp(max=h - box_h), (h - box_h) // 2)
        left = torch.where(any_fits, (u_left * (w - box_w + 1)).floor().long().clamp(max=w - box_w), (w - box_w) // 2)
        return top, left, box_h, box_w

    def fallback(self, h: int, w: int) -> tuple[int, int]:
        """torchvision's central-crop fallback size (height, width) after `max_attempt` misses."""
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            return int(round(w / self.ratio[0])), w
        if in_ratio > self.ratio[1]:
            return h, int(round(h * self.ratio[1]))
        return h, w

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = images.shape
        return resize_boxes(images, *self.boxes(b, h, w, generator))


def _source_index(size: int, box_start: torch.Tensor, box_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For `size` output pixels over each box: (first source index, second source index, weight
    of the second), all (B, size), as PyTorch's bilinear kernel computes them (align_corners=False)."""
    scale = box_size.float() / size  # input / output, in float32 as the kernel
    dst = torch.arange(size, device=box_start.device, dtype=torch.float32)
    src = (scale[:, None] * (dst + 0.5) - 0.5).clamp(min=0)
    first = src.long()  # floor, src >= 0
    second = torch.minimum(first + 1, box_size[:, None] - 1)
    return box_start[:, None] + first, box_start[:, None] + second, src - first


def resize_boxes(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, box_h: torch.Tensor,
                 box_w: torch.Tensor) -> torch.Tensor:
    """Each image's box (rows [top, top + box_h), columns [left, left + box_w)) bilinearly resized to
    the image size; the dtype is kept (uint8 rounded to nearest as torchvision's tensor resize)."""
    b, c, h, w = images.shape
    y0, y1, wy = _source_index(h, top, box_h)
    x0, x1, wx = _source_index(w, left, box_w)
    source = images.float()

    def rows(index: torch.Tensor) -> torch.Tensor:
        return source.gather(2, index[:, None, :, None].expand(b, c, h, w))

    def cols(part: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return part.gather(3, index[:, None, None, :].expand(b, c, h, w))

    wx, wy = wx[:, None, None, :], wy[:, None, :, None]
    top_rows, bottom_rows = rows(y0), rows(y1)
    upper = (1 - wx) * cols(top_rows, x0) + wx * cols(top_rows, x1)
    lower = (1 - wx) * cols(bottom_rows, x0) + wx * cols(bottom_rows, x1)
    out = (1 - wy) * upper + wy * lower
    if not images.dtype.is_floating_point:
        out = out.round().clamp(0, 255)
    return out.to(images.dtype).contiguous(memory_format=memory_format_of(images))

