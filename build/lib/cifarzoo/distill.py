"""Knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"):
`train.distill.teacher=<MLflow run id | run dir | checkpoint path>`, `train.distill.temperature` (T),
`train.distill.alpha`.

    loss = (1 - alpha) * recipe loss + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

with the KL summed over classes and averaged over the batch (`reduction="batchmean"`, the true KL;
`nn.KLDivLoss()`'s default mean would also divide by the number of classes). The recipe's loss is
whatever the `aug` recipe computes (cross entropy against its soft targets, label smoothing,
Dual Cutout's two views and their MSE term). The teacher runs in eval mode without gradients on
exactly the inputs the student sees, after augmentation and mixing, under the run's precision.

Reference: pytorch-cifar-tricks lists KD among its tricks, but no commit of that repository
contains distillation code; this follows the paper in the form of the common CIFAR baseline (CRD's
RepDistiller: T = 4, alpha = 0.9 on the soft term). Where cifarzoo goes beyond a single-view
cross-entropy step:
- a recipe that feeds the model several views (Dual Cutout) gets the soft term on each view, averaged;
- under Mixup/CutMix/RICAP the teacher sees the mixed image, and the hard term uses the mixed targets;
- label smoothing applies to the hard term only;
- the logged `train_loss` is the whole loss above (the soft term included).

Built in `cifarzoo.build`: `Distillation` wraps the run's `Recipe`, so the training step (eager or
CUDA graph) runs it unchanged. It reads no device value on the host and branches on none."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from cifarzoo.aug import Recipe
from cifarzoo.aug.base import Forward
from cifarzoo.data import ImageDataset
from cifarzoo.errors import ConfigError, is_number, require
from cifarzoo.trained import TrainedRun, find_run

TEACHER_KEY = "train.distill.teacher"
Views = torch.Tensor | tuple[torch.Tensor, ...]


class Distillation:
    """The run's recipe, with the teacher's soft targets added to its loss. `batch` and `blocks` are
    the recipe's: the batch is augmented and mixed exactly as without a teacher."""

    def __init__(self, recipe: Recipe, teacher: torch.nn.Module, temperature: float, alpha: float) -> None:
        self.recipe, self.teacher = recipe, teacher
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.batch = recipe.batch
        self.blocks = recipe.blocks

    def loss(self, model: Forward, views: Views, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, logits for the training error), as `Recipe.loss`."""
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (input, student logits) of every forward

        def student(x: torch.Tensor) -> torch.Tensor:
            logits = model(x)
            seen.append((x, logits))
            return logits

        hard, logits = self.recipe.loss(student, views, targets)
        soft = sum(self.soft_loss(self.teacher_logits(x), s) for x, s in seen) / len(seen)
        return (1 - self.alpha) * hard + self.alpha * soft, logits

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(x)

    def soft_loss(self, teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
        """T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch mean, in the criterion's dtype."""
        dtype, t = self.recipe.criterion.dtype, self.temperature
        log_p = F.log_softmax(student.to(dtype) / t, dim=1)
        log_q = F.log_softmax(teacher.to(dtype) / t, dim=1)
        return t * t * F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)

    def __repr__(self) -> str:
        return f"Distillation({self.recipe!r}, T={self.temperature}, alpha={self.alpha})"


def check_settings(distill: DictConfig) -> None:
    require(is_number(distill.temperature) and distill.temperature > 0, "train.distill.temperature",
            "must be a number > 0", distill.temperature)
    require(is_number(distill.alpha) and 0 <= distill.alpha <= 1, "train.distill.alpha", "must be in [0, 1]",
            distill.alpha)


def find_teacher(cfg: DictConfig, dataset: ImageDataset | None = None) -> TrainedRun | None:
    """The run `train.distill.teacher` names (None: no distillation), checked against the student's
    data (`dataset`, default: built from `cfg.data`): the same dataset, classes, channels and image
    size. Reads no weights."""
    from cifarzoo.config import build
    from cifarzoo.paths import default_tracking_uri

    distill = cfg.train.distill
    check_settings(distill)
    if distill.teacher is None:
        return None
    teacher = find_run(distill.teacher, cfg.tracking.uri or default_tracking_uri(), TEACHER_KEY)
    dataset = build(cfg.data) if dataset is None else dataset
    theirs = teacher.dataset()
    for what in ("name", "num_classes", "channels", "image_size"):
        if getattr(theirs, what) != getattr(dataset, what):
            raise ConfigError(TEACHER_KEY, f"was trained on {_data(theirs)}, but this run trains on {_data(dataset)}; "
                              "a teacher must know the student's classes", distill.teacher)
    return teacher


def _data(d: ImageDataset) -> str:
    return f"{d.name} ({d.num_classes} classes, {d.channels}x{d.image_size}x{d.image_size})"


def identity(resolved: dict[str, Any], teacher: TrainedRun | None) -> dict[str, Any]:
    """What `config_hash` hashes of a resolved config whose teacher is `teacher` (`find_teacher`):
    without a teacher, no `train.distill` at all (a plain run keeps the hash it had before distillation
    existed); with one, the teacher as the trained model it is (its config_hash and seed), however
    it was named (run id, run dir or checkpoint)."""
    distill = resolved.get("train", {}).get("distill")
    if distill is None:
        return resolved
    train = {k: v for k, v in resolved["train"].items() if k != "distill"}
    if teacher is not None:
        train["distill"] = {**distill, "teacher": {"config_hash": teacher.config_hash, "seed": teacher.seed}}
    return {**resolved, "train": train}


def tracking_fields(teacher: TrainedRun | None) -> tuple[dict[str, str], dict[str, str]]:
    """(params, tags) a student logs about its teacher: the teacher's MLflow run id and config_hash."""
    if teacher is None:
        return {}, {}
    return ({"train.distill.teacher_run_id": teacher.run_id},
            {"teacher_run_id": teacher.run_id, "teacher_config_hash": teacher.config_hash})
