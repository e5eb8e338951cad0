"""The training-step interface and the work every implementation shares.

A step takes the indices of one batch into the device-resident training split, augments the
batch, runs forward and backward, steps the optimizer (through the precision mode) and the LR
schedule, and adds the batch's (loss * size, correct) to the loop's running sums. The loop calls
it and knows nothing of how it runs (`cifarzoo.steps.eager`, `cifarzoo.steps.graph`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from cifarzoo.loop import Parts

# Optimizer flags that pick the update's implementation. A checkpoint carries them in its param
# groups, so a run resumed from another step kind's checkpoint gets them back from its step.
IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable")


class StepBody:
    """One step's computation, written once: the eager step runs it as is, the graph step runs it on
    static buffers (and captures it on CUDA). Nothing in it reads a device value on the host."""

    def __init__(self, parts: Parts) -> None:
        forward = parts.model if parts.forward is None else parts.forward
        self.forward = forward if parts.train_forward is None else parts.train_forward
        self.data, self.aug, self.optimizer = parts.data, parts.aug, parts.optimizer
        self.precision, self.generator, self.grad_clip = parts.precision, parts.generator, parts.grad_clip
        self.params = [p for group in parts.optimizer.param_groups for p in group["params"]]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor | tuple[torch.Tensor, ...], torch.Tensor]:
        """The augmented view(s) and soft targets of the training images at `index`."""
        data = self.data
        return self.aug.batch(data.train_x[index], data.train_y[index], data.num_classes, data.normalize,
                              self.generator)

    def gradients(self, views: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh gradients of the loss (clipped by the precision mode); returns (loss, logits), detached.
        Gradients are set to None first (`zero_grad(set_to_none=True)`): under capture, backward then
        allocates them in the graph's memory pool and every replay rewrites them in place."""
        for p in self.params:
            p.grad = None
        with self.precision.autocast():
            loss, logits = self.aug.loss(self.forward, views, targets)
        self.precision.backward(loss, self.optimizer, self.grad_clip)
        return loss.detach().float(), logits.detach()  # float: a half loss (fp16, loss_in_half) x batch size can overflow

    def run(self, index: torch.Tensor, sums: torch.Tensor) -> None:
        views, targets = self.batch(index)
        first: list[tuple[torch.Tensor, torch.Tensor]] = []

        def closure() -> torch.Tensor:  # SAM calls it twice; the first call's loss is the one reported
            loss, logits = self.gradients(views, targets)
            if not first:
                first.append((loss, logits))
            return loss

        self.precision.step(self.optimizer, closure)
        loss, logits = first[0]
        sums[0] += loss * len(targets)
        # Correct = the target weight on the predicted class (lam / 1 - lam under Mixup, area under RICAP).
        sums[1] += targets.gather(1, logits.argmax(1, keepdim=True)).sum()


class TrainStep:
    """`step(index, sums) -> lr`: one optimizer step on the training images at `index`, adding the
    batch's (loss * size, correct) to `sums` (float64, on the device); returns the LR of param group 0
    that the step used. `kind` names the implementation (the run's `train_step` tag)."""

    kind = ""
    # Called with (kind, reason) when the step changes kind mid-run (a failed capture under
    # train.step=auto): whoever records the run's `train_step` tags sets it.
    on_change: Callable[[str, str], None] | None = None

    def __init__(self, parts: Parts) -> None:
        self.body = StepBody(parts)
        self.optimizer, self.scheduler = parts.optimizer, parts.scheduler
        self._implementation = [{k: g[k] for k in IMPLEMENTATION_KEYS if k in g} for g in parts.optimizer.param_groups]
        self._started = False

    def __call__(self, index: torch.Tensor, sums: torch.Tensor) -> float:
        if not self._started:  # after any checkpoint was loaded into the optimizer
            self._restore_implementation()
            self._started = True
        lr = self.optimizer.param_groups[0]["lr"]
        self.run(index, sums)
        self.scheduler.step()
        return lr

    def run(self, index: torch.Tensor, sums: torch.Tensor) -> None:
        raise NotImplementedError

    def _restore_implementation(self) -> None:
        """This step's optimizer flags (a checkpoint of the other step kind brings its own), and
        Adam's step counters where a fused/capturable update expects them: on the parameter's device."""
        for group, flags in zip(self.optimizer.param_groups, self._implementation):
            group.update(flags)
            if not (group.get("fused") or group.get("capturable")):
                continue
            for p in group["params"]:
                state = self.optimizer.state.get(p, {})
                if torch.is_tensor(state.get("step")):
                    state["step"] = state["step"].to(device=p.device, dtype=torch.float32)
