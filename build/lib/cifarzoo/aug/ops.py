"""Batched image ops for AutoAugment and RandAugment.

Each op takes a uint8 batch (N, C, H, W), C = 1 or 3, and where it has a parameter, one value per
image as a tensor of shape (N,) on the batch's device. It returns a new uint8 batch of the same shape.
Image by image, every op gives what torchvision.transforms.v2.functional gives on a uint8 tensor
(tests/test_aug_policies.py checks this). The colour ops follow PIL's ImageEnhance: factor 1 is the
identity, other factors blend the image with a degenerate version of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _per_image(values: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N,) values as (N, 1, 1, 1), to broadcast over a batch."""
    return values.to(dtype).view(-1, 1, 1, 1)


def identity(images: torch.Tensor) -> torch.Tensor:
    return images


# Geometric ops: nearest-neighbour resampling, fill 0 outside the image.


def _resample(images: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Output pixel p takes input pixel `inverse[i] @ (p, 1)`. `inverse` is (N, 2, 3), in pixel units
    with the origin at the image centre. The grid is built with the same float32 steps as
    torchvision's affine, so that ties at nearest-neighbour boundaries round the same way."""
    n, c, h, w = images.shape
    device = images.device
    xs = torch.linspace((1 - w) / 2, (w - 1) / 2, w, device=device)
    ys = torch.linspace((1 - h) / 2, (h - 1) / 2, h, device=device)
    ones = torch.ones(h, w, device=device)
    centres = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), ones], dim=-1).view(1, h * w, 3)
    half_size = torch.tensor([w / 2, h / 2], device=device)
    theta = inverse.to(torch.float32).transpose(1, 2) / half_size  # to grid_sample's [-1, 1] units
    grid = centres.expand(n, -1, -1).bmm(theta).view(n, h, w, 2)
    out = F.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.to(torch.uint8)


def _matrices(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor, e: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Per-image 2x3 matrices [[a, b, c], [d, e, f]] from (N,) float64 entries."""
    return torch.stack([a, b, c, d, e, f], dim=-1).view(-1, 2, 3)


def shear_x(images: torch.Tensor, shear: torch.Tensor) -> torch.Tensor:
    """Output pixel (x, y) takes input pixel (x + shear * y, y), about the top-left corner: the
    matrix (1, shear, 0, 0, 1, 0) of the AutoAugment code. torchvision gets it with
    affine(shear=[degrees(atan(shear)), 0], center=[0, 0])."""
    m = shear.to(torch.float64)
    zero, one = torch.zeros_like(m), torch.ones_like(m)
    # The top-left corner is (-w/2, -h/2) in centred coordinates.
    return _resample(images, _matrices(one, m, m * (images.shape[2] / 2), zero, one, zero))


def shear_y(images: torch.Tensor, shear: torch.Tensor) -> torch.Tensor:
    """Output pixel (x, y) takes input pixel (x, y + shear * x), about the top-left corner."""
    m = shear.to(torch.float64)
    zero, one = torch.zeros_like(m), torch.ones_like(m)
    return _resample(images, _matrices(one, zero, zero, m, one, m * (images.shape[3] / 2)))


def translate_x(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Shift right by `pixels` (left if negative): torchvision's affine(translate=[pixels, 0])."""
    t = pixels.to(torch.float64)
    zero, one = torch.zeros_like(t), torch.ones_like(t)
    return _resample(images, _matrices(one, zero, -t, zero, one, zero))


def translate_y(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Shift down by `pixels` (up if negative): torchvision's affine(translate=[0, pixels])."""
    t = pixels.to(torch.float64)
    zero, one = torch.zeros_like(t), torch.ones_like(t)
    return _resample(images, _matrices(one, zero, zero, zero, one, -t))


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate counter-clockwise by `degrees` about the image centre, keeping the size."""
    # torchvision reduces the angle to [0, 360) first; doing the same keeps the float32 matrix identical.
    angle = torch.deg2rad(-torch.remainder(degrees.to(torch.float64), 360.0))
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    return _resample(images, _matrices(cos, sin, zero, -sin, cos, zero))


# Colour ops.


def invert(images: torch.Tensor) -> torch.Tensor:
    return images.bitwise_not()


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert the pixels >= threshold (pixel units, 0..255)."""
    return torch.where(images >= _per_image(threshold), images.bitwise_not(), images)


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the `bits` (0..8) most significant bits of each pixel."""
    bits = bits.to(torch.int64)
    mask = (torch.full_like(bits, 0xFF) << (8 - bits)) & 0xFF
    return images & _per_image(mask, torch.uint8)


def auto_contrast(images: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to the full 0..255 range; flat channels are kept."""
    x = images.float()
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    flat = high == low
    scale = torch.where(flat, 1.0, (high - low) * (1.0 / 255))
    low = torch.where(flat, 0.0, low)
    return ((x - low) / scale).clamp_(0, 255).to(torch.uint8)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each channel of each image, with PIL's lookup table (as torchvision):
    lut[v] = (step // 2 + #pixels below v) // step, step = #pixels below the channel's top value // 255.
    Channels with step 0 (at most 255 pixels below the top value) are kept."""
    n, c, h, w = images.shape
    pixels = images.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=images.device)
    hist.scatter_add_(1, pixels, torch.ones_like(pixels))
    top_count = hist.gather(1, pixels.amax(dim=1, keepdim=True))
    step = (h * w - top_count) // 255
    below = hist.cumsum(dim=1) - hist
    lut = ((below + step // 2) // step.clamp(min=1)).clamp_(max=255)
    equalized = torch.where(step > 0, lut.gather(1, pixels), pixels)
    return equalized.to(torch.uint8).view(n, c, h, w)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) float32 luma, floored, of an RGB uint8 batch (torchvision's weights)."""
    r, g, b = images.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(1)


def _blend(images: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """images * factor + degenerate * (1 - factor), clamped and truncated to uint8.

    torchvision computes the second product and the sum as one fused multiply-add (a single
    rounding); addcmul does too, and an unfused version would differ by 1 on some pixels."""
    f = factor.to(torch.float64)
    blended = torch.addcmul(images * _per_image(f), degenerate, _per_image(1 - f))
    return blended.clamp_(0, 255).to(torch.uint8)


def brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with black: factor 0 gives a black image, 1 the image."""
    return (images * _per_image(factor.to(torch.float64))).clamp_(0, 255).to(torch.uint8)


def color(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Saturation: blend with the image's grayscale version. Identity on grayscale images."""
    if images.shape[1] == 1:
        return images
    return _blend(images, _grayscale(images), factor)


def contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with a flat image at the image's mean luma."""
    luma = _grayscale(images) if images.shape[1] == 3 else images.float()
    return _blend(images, luma.mean(dim=(1, 2, 3), keepdim=True), factor)


def sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with a smoothed image (3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13); the border
    pixels, where the kernel does not fit, are kept as they are."""
    h, w = images.shape[2:]
    if h <= 2 or w <= 2:
        return images
    x = images.float()
    inner = x[:, :, 1:-1, 1:-1]
    # Integer 3x3 sums are exact in float32, and k / 13 is never a tie, so rounding the exact
    # quotient matches torchvision's float convolution; a depthwise conv2d is much slower on CPU.
    weighted_sum = F.avg_pool2d(x, 3, stride=1, divisor_override=1) + 4 * inner
    smooth = (weighted_sum / 13).round_()
    # inner + (1 - factor) * (smooth - inner), one rounding like torchvision's in-place add.
    x[:, :, 1:-1, 1:-1] = torch.addcmul(inner, smooth - inner, _per_image(1 - factor.to(torch.float64)))
    return x.clamp_(0, 255).to(torch.uint8)
