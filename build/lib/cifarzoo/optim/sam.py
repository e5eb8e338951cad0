"""`optim=sam` / `optim=asam`: Sharpness-Aware Minimization (Foret et al. 2021) and its adaptive
variant ASAM (Kwon et al. 2021) around a base optimizer picked by `optim.base`.

Each step takes the gradient g at w, moves to w + e with e = rho * g / ||g|| (ASAM:
e = rho * T^2 g / ||T g||, T = |w| + eta elementwise), takes the gradient there, moves back to w
and lets the base optimizer step with that second gradient. As in the authors' code, ASAM's T
applies to weights and is the identity on biases. BatchNorm running statistics are updated by
the first pass only (the usual practice; the second pass runs at perturbed weights)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from cifarzoo.errors import ConfigError, is_number, require
from cifarzoo.optim.base import OptimizerFactory


class SharpnessAware(torch.optim.Optimizer):
    """Wraps `base`: shares its param_groups (so LR schedules act on it) and its state."""

    def __init__(self, base: torch.optim.Optimizer, model: torch.nn.Module, rho: float, adaptive: bool,
                 eta: float) -> None:
        super().__init__(base.param_groups, base.defaults)
        self.base, self.rho, self.adaptive, self.eta = base, rho, adaptive, eta
        self.param_groups, self.state = base.param_groups, base.state
        self.biases = {id(p) for m in model.modules() for n, p in m.named_parameters(recurse=False) if n == "bias"}
        self.norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]

    def _scale(self, p: torch.Tensor) -> torch.Tensor | float:
        """T for parameter p: |w| + eta under ASAM (weights only), else 1."""
        return p.abs() + self.eta if self.adaptive and id(p) not in self.biases else 1.0

    @torch.no_grad()
    def ascent(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Move every parameter with a gradient to w + e; return the (parameter, e) pairs."""
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        scales = [self._scale(p) for p in params]
        scaled = [t * p.grad for t, p in zip(scales, params)]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s.float()) for s in scaled]))
        moves = []
        for p, t, s in zip(params, scales, scaled):
            e = (t * s * (self.rho / (norm + 1e-12))).to(p.dtype)
            p.add_(e)
            moves.append((p, e))
        return moves

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise RuntimeError("SAM needs a closure that recomputes the loss and its gradients")
        with torch.enable_grad():
            loss = closure()
        moves = self.ascent()
        momenta = [m.momentum for m in self.norms]
        for m in self.norms:
            m.momentum = 0.0  # keep the running statistics of the first pass
        try:
            with torch.enable_grad():
                closure()
        finally:
            for m, momentum in zip(self.norms, momenta):
                m.momentum = momentum
            with torch.no_grad():
                for p, e in moves:
                    p.sub_(e)
        self.base.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)
        self.param_groups, self.state = self.base.param_groups, self.base.state


class SAM:
    """Factory: `base` names the wrapped optimizer (an `optim` option); every other key that is
    not SAM's own goes to that optimizer, so `optim.lr`, `optim.weight_decay`, ... keep their
    meaning. For a base with other keys than sgd's, remove sgd's: `~optim.momentum ~optim.nesterov`."""

    needs_closure = True  # the step evaluates the loss twice
    graph_unsupported = ("sam/asam: two forward/backward passes per step around a base optimizer that is not built "
                         "graph-safe (no fused update reading the LR from the device)")

    def __init__(self, base: str = "sgd", rho: float = 0.05, adaptive: bool = False, eta: float = 0.01,
                 **base_keys: Any) -> None:
        from cifarzoo.optim import BASE_OPTIMIZERS  # the registry lives beside every option's import

        require(base in BASE_OPTIMIZERS, "optim.base", f"must be one of {', '.join(BASE_OPTIMIZERS)}", base)
        require(is_number(rho) and rho > 0, "optim.rho", "must be > 0", rho)
        require(isinstance(adaptive, bool), "optim.adaptive", "must be true or false", adaptive)
        require(is_number(eta) and eta >= 0, "optim.eta", "must be >= 0", eta)
        factory_class = BASE_OPTIMIZERS[base]
        try:
            self.base: OptimizerFactory = factory_class(**base_keys)
        except TypeError as e:  # a key the base optimizer does not take
            unknown = next((k for k in base_keys if f"'{k}'" in str(e)), "?")
            raise ConfigError(f"optim.{unknown}", f"is not a key of optim.base={base}; remove it with ~optim.{unknown}") from e
        self.rho, self.adaptive, self.eta = float(rho), adaptive, float(eta)
        self.grad_clip = self.base.grad_clip

    def build(self, model: torch.nn.Module, batch_size: int) -> SharpnessAware:
        return SharpnessAware(self.base.build(model, batch_size), model, self.rho, self.adaptive, self.eta)
