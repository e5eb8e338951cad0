"""The graph step: the whole training step captured once in a CUDA graph and replayed every step.

Everything the captured kernels read or write lives at fixed addresses: the batch's indices (copied
into `index` before each replay), the LR of each param group (a float32 device tensor, filled from
the schedule before each replay), the parameters, gradients and optimizer state, the GradScaler's
scale and inf flag, the generator's state and the loop's running sums. The optimizer is torch's
fused one (built with `fused=True`, see `cifarzoo.build`): it reads the LR from the device tensor and
takes GradScaler's scale and inf flag on the device, so amp_fp16's skip of a step with inf/NaN
gradients happens inside the graph, without a host sync.

The LR: the scheduler steps on the host as in the eager step, and its value is written into the
device tensor with one `fill_` per param group before the replay (a kernel launch of a few
microseconds, next to a ~2 ms replay at 60k img/s and batch 128; the alternative, a device table of
every step's LR indexed by a device step counter, saves that launch but duplicates the schedule and
its resume state). The param groups keep plain float LRs outside the step, so the schedule,
checkpoints and logged metrics are those of the eager step.

On CPU (`capture=False`) the same graph-safe form runs eagerly: the tests compare it with the eager
step there. On CUDA the first `WARMUP_STEPS` steps run eagerly on a side stream (lazy state: the
momentum buffers, GradScaler's scale, cuDNN's benchmark choices, ghost BN's coefficients), then the
next step is captured and every step from then on is a replay. Warm-up steps are real steps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from cifarzoo.steps.base import TrainStep

if TYPE_CHECKING:
    from cifarzoo.loop import Parts

WARMUP_STEPS = 3


@contextlib.contextmanager
def tensor_lrs(optimizer: torch.optim.Optimizer, lrs: list[torch.Tensor]) -> Iterator[None]:
    """The param groups' LRs as these device tensors while the update runs (or is captured)."""
    floats = [group["lr"] for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, floats):
            group["lr"] = lr


class GraphStep(TrainStep):
    kind = "graph"

    def __init__(self, parts: Parts, capture: bool) -> None:
        super().__init__(parts)
        device = parts.data.device
        batch = parts.settings.batch_size // parts.ranks.world_size
        self.index = torch.zeros(batch, dtype=torch.long, device=device)
        self.lrs = [torch.zeros((), dtype=torch.float32, device=device) for _ in parts.optimizer.param_groups]
        self.capture, self.device = capture, device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warmed_up = 0
        self.sums: torch.Tensor | None = None  # the sums the graph adds to

    def run(self, index: torch.Tensor, sums: torch.Tensor) -> None:
        self.index.copy_(index)
        for lr, group in zip(self.lrs, self.optimizer.param_groups):
            lr.fill_(group["lr"])
        if self.graph is not None:
            if sums is not self.sums:
                raise RuntimeError("the graph step adds to the running sums it was captured with; keep that tensor")
            self.graph.replay()
        elif not self.capture:
            self._body(sums)
        elif self.warmed_up < WARMUP_STEPS:
            self._warm_up(sums)
        else:
            self._capture(sums)
            self.graph.replay()

    def _body(self, sums: torch.Tensor) -> None:
        with tensor_lrs(self.optimizer, self.lrs):
            self.body.run(self.index, sums)

    def _warm_up(self, sums: torch.Tensor) -> None:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._body(sums)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.warmed_up += 1

    def _capture(self, sums: torch.Tensor) -> None:
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        # The augmentation draws from the run's own generator: its state must advance on every replay
        # (torch versions that register generators lazily make this a deprecated no-op).
        with contextlib.suppress(AttributeError), _quiet_deprecation():
            graph.register_generator_state(self.body.generator)
        with torch.cuda.graph(graph):
            self._body(sums)
        self.graph, self.sums = graph, sums


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
