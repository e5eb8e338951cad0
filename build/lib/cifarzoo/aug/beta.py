"""Beta(a, b) samples from a torch.Generator on any device, without a host sync.

torch.distributions cannot take a generator, and the mixing methods must draw all their
randomness from the run's generator so that a resumed run repeats itself exactly. Gamma
variates by Marsaglia & Tsang (2000); shapes below 1 use Gamma(a) = Gamma(a + 1) * U^(1/a)."""

from __future__ import annotations

import math

import torch

# Candidates per sample. Each is accepted with probability > 0.95, so all of them fail with
# probability < 1e-10; that sample then takes its last candidate (clamped to be positive).
CANDIDATES = 8


def sample_gamma(shape: float, n: int, generator: torch.Generator) -> torch.Tensor:
    device = generator.device
    a = shape + 1 if shape < 1 else shape
    d = a - 1 / 3
    c = 1 / math.sqrt(9 * d)
    x = torch.randn(n, CANDIDATES, device=device, generator=generator, dtype=torch.float64)
    u = torch.rand(n, CANDIDATES, device=device, generator=generator, dtype=torch.float64)
    v = (1 + c * x).clamp_min(1e-12) ** 3
    ok = (1 + c * x > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v))
    ok[:, -1] = True
    first = ok.to(torch.int8).argmax(1, keepdim=True)
    out = (d * v).gather(1, first).squeeze(1)
    if shape < 1:
        out = out * torch.rand(n, device=device, generator=generator, dtype=torch.float64) ** (1 / shape)
    return out


def sample_beta(a: float, b: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` draws of Beta(a, b) as float32 on the generator's device."""
    x = sample_gamma(a, n, generator)
    y = sample_gamma(b, n, generator)
    return (x / (x + y)).float()
