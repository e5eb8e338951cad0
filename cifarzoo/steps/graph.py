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
momentum buffers, GradScaler's scale, cuDNN's benchmark choices, ghost BN's coefficients, Swin's
masks), then the next step is captured and every step from then on is a replay. Warm-up steps are
real steps.

The safety net: the last warm-up step runs under `torch.cuda.set_sync_debug_mode` (in "warn" mode,
its warnings turned into a failure once the step has completed: "error" mode would stop the step
half-way through its update), the capture uses `capture_error_mode="thread_local"` (another
thread's CUDA calls do not invalidate it), and a host sync in that warm-up step, a failed capture or
a failed first replay ends the graph: under `train.step=auto` the step goes on in its eager form for
the rest of the run (one log line, and `on_change` updates the run's `train_step` tags); under
`train.step=graph` it is a one-line `CaptureFailed` naming the part. A capture executes nothing, so
the failed step is then run eagerly from the same state; a failed replay (seen only with a broken
device) may have run part of its step."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from cifarzoo.steps.base import TrainStep

if TYPE_CHECKING:
    from cifarzoo.loop import Parts

log = logging.getLogger("cifarzoo")

WARMUP_STEPS = 3


class CaptureFailed(RuntimeError):
    """train.step=graph, and the step could not be captured or replayed (one line: the part and why)."""


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

    def __init__(self, parts: Parts, capture: bool, fallback: bool = False) -> None:
        super().__init__(parts)
        device = parts.data.device
        batch = parts.settings.batch_size // parts.ranks.world_size
        self.index = torch.zeros(batch, dtype=torch.long, device=device)
        self.lrs = [torch.zeros((), dtype=torch.float32, device=device) for _ in parts.optimizer.param_groups]
        self.capture, self.device, self.fallback = capture, device, fallback
        self.precision = parts.precision
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warmed_up = 0
        self.steps = 0
        self.sums: torch.Tensor | None = None  # the sums the graph adds to

    def run(self, index: torch.Tensor, sums: torch.Tensor) -> None:
        self.index.copy_(index)
        for lr, group in zip(self.lrs, self.optimizer.param_groups):
            lr.fill_(group["lr"])
        self.steps += 1
        if self.graph is not None:
            if sums is not self.sums:
                raise RuntimeError("the graph step adds to the running sums it was captured with; keep that tensor")
            self.graph.replay()
        elif not self.capture:
            self._body(sums)
        elif self.warmed_up < WARMUP_STEPS:
            syncs = self._warm_up(sums, check_syncs=self.warmed_up == WARMUP_STEPS - 1)
            self.warmed_up += 1
            if syncs:
                self._give_up("last warm-up step", f"it synchronised with the host ({syncs[0]})", rerun=None)
        else:
            self._capture_and_replay(sums)

    def _body(self, sums: torch.Tensor) -> None:
        with tensor_lrs(self.optimizer, self.lrs):
            self.body.run(self.index, sums)

    def _capture_and_replay(self, sums: torch.Tensor) -> None:
        part, random_states = "capture", self._random_states()
        try:
            self.graph, self.sums = self._capture(sums), sums
            part = "first replay"
            self.graph.replay()
        except Exception as error:  # noqa: BLE001 - any failure here ends the graph, not the run
            if part == "capture":  # the step is run again eagerly: with the random numbers it would have drawn
                self._set_random_states(random_states)
            self._give_up(part, _one_line(error), rerun=sums if part == "capture" else None)

    def _random_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The run's generator and the device's default one (the model's dropout, stochastic depth)."""
        default = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.get_rng_state()
        return self.body.generator.get_state(), default

    def _set_random_states(self, states: tuple[torch.Tensor, torch.Tensor]) -> None:
        with contextlib.suppress(RuntimeError):  # best effort: the rerun then draws other numbers
            self.body.generator.set_state(states[0])
            if self.device.type == "cuda":
                torch.cuda.set_rng_state(states[1], self.device)
            else:
                torch.set_rng_state(states[1])

    def _give_up(self, part: str, why: str, rerun: torch.Tensor | None) -> None:
        """No graph from here on: under train.step=graph a CaptureFailed; under auto the eager form of the
        step for the rest of the run, first re-running this step when its capture ran none of it (`rerun`)."""
        self.graph, self.sums = None, None
        if not self.fallback:
            raise CaptureFailed(f"train.step=graph: the CUDA graph failed in the {part} (step {self.steps}): {why}")
        self.capture = False
        self.kind = "eager"
        reason = (f"train.step=auto: eager from step {self.steps} on, because the CUDA graph failed in the "
                  f"{part}: {why}")
        log.warning("training step: %s", reason)
        self._clean_up()
        if rerun is not None:
            self._body(rerun)
        if self.on_change is not None:
            self.on_change(self.kind, reason)

    def _clean_up(self) -> None:
        """What an aborted capture leaves behind: gradients in the graph's memory pool, GradScaler's
        per-step bookkeeping; and a device with work queued before it."""
        for p in self.body.params:
            p.grad = None
        scaler = getattr(self.precision, "scaler", None)
        if scaler is not None:
            scaler._per_optimizer_states.clear()  # a defaultdict: the next step starts afresh
        if self.device.type == "cuda":
            with contextlib.suppress(RuntimeError):
                torch.cuda.synchronize(self.device)

    def _warm_up(self, sums: torch.Tensor, check_syncs: bool) -> list[str]:
        """One eager step on a side stream; with `check_syncs`, the host syncs it made (messages)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with warnings.catch_warnings(record=True) as caught, torch.cuda.stream(side):
            warnings.simplefilter("always")
            if check_syncs:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                self._body(sums)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.current_stream(self.device).wait_stream(side)
        for w in caught:
            if "synchroniz" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return [_one_line(w.message) for w in caught if "synchroniz" in str(w.message)]

    def _capture(self, sums: torch.Tensor) -> torch.cuda.CUDAGraph:
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        # The augmentation draws from the run's own generator: its state must advance on every replay
        # (torch versions that register generators lazily make this a deprecated no-op).
        with contextlib.suppress(AttributeError), _quiet_deprecation():
            graph.register_generator_state(self.body.generator)
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._body(sums)
        return graph


def _one_line(what: object, limit: int = 300) -> str:
    text = str(what).strip().splitlines()
    line = f"{type(what).__name__}: {text[0] if text else ''}" if isinstance(what, BaseException) else (
        text[0] if text else "")
    return line[:limit]


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield
