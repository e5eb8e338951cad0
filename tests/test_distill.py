"""Knowledge distillation (`train.distill`): the loss by hand, a plain run's bits at alpha=0, a student
trained from a real teacher run (found by run id, dir or checkpoint), its identity, and bad teachers."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import QUICK, compose_config, compose_run, train_until_killed
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from cifarzoo.aug import DualCutout, LabelSmoothing, Mixup, Recipe
from cifarzoo.build import build_run
from cifarzoo.config import config_hash
from cifarzoo.distill import Distillation, find_teacher, identity
from cifarzoo.errors import ConfigError
from cifarzoo.loop import Diverged, Trainer
from cifarzoo.preflight import build_on_meta
from cifarzoo.task import train
from cifarzoo.trained import find_run, load_model

TINY_MODEL = ["model.depth=8", "model.base_channels=4"]  # resnet_preact, ~3k params
KEY = "train.distill.teacher"


class Store:
    """The module's MLflow store, its teacher run, and a fresh experiment per student."""

    def __init__(self, root: Path) -> None:
        self.root, self.uri = root, f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri)

    def run(self, name: str, *overrides: str) -> tuple[float, str, Path]:
        """Train in-process, in experiment `name`; (test error, MLflow run id, run dir)."""
        cfg, ctx = self.compose(name, *overrides)
        error = train(cfg, ctx)
        return error, self.run_id(ctx.output_dir), ctx.output_dir

    def compose(self, name: str, *overrides: str):  # noqa: ANN201
        return compose_run([*QUICK, "train.epochs=1", f"tracking.uri={self.uri}", f"tracking.experiment={name}",
                            *overrides], self.root / name)

    def run_id(self, run_dir: Path) -> str:
        return OmegaConf.load(run_dir / "mlflow_run.json").run_id

    def get(self, run_id: str):  # noqa: ANN201
        return self.client.get_run(run_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory, one_thread) -> Store:
    return Store(tmp_path_factory.mktemp("kd"))


@pytest.fixture(scope="module")
def teacher(store: Store) -> tuple[str, Path]:
    """A tiny teacher trained for one epoch on 256 fake images: (run id, run dir)."""
    _, run_id, run_dir = store.run("teacher", *TINY_MODEL, "optim.lr=0.05")
    return run_id, run_dir


# -- the loss ----------------------------------------------------------------------------------------

class Recording(torch.nn.Module):
    """A linear classifier on flattened images that keeps every input it is given."""

    def __init__(self, seed: int, classes: int = 5) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3 * 8 * 8, classes)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(classes, 3 * 8 * 8, generator=torch.Generator().manual_seed(seed)))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x)
        return self.linear(x.flatten(1))


def by_hand(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """T^2 * mean over images of sum_k q_k (log q_k - log p_k), q = softmax(teacher/T), p = softmax(student/T)."""
    q = torch.exp(teacher / t) / torch.exp(teacher / t).sum(1, keepdim=True)
    p = torch.exp(student / t) / torch.exp(student / t).sum(1, keepdim=True)
    return t * t * (q * (torch.log(q) - torch.log(p))).sum(1).mean()


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, 8, 8, generator=g), F.one_hot(torch.tensor([0, 1, 2, 3, 4, 0]), 5).float()


def test_loss_is_the_recipes_plus_the_soft_term_by_hand():
    x, targets = fixed_batch()
    student, teacher = Recording(1), Recording(2)
    kd = Distillation(Recipe(smooth=LabelSmoothing(0.1)), teacher, temperature=4.0, alpha=0.9)
    loss, logits = kd.loss(student, x, targets)
    s, t = student.linear(x.flatten(1)), teacher.linear(x.flatten(1))
    smoothed = 0.9 * targets + 0.1 / 5
    hard = -(smoothed * torch.log(torch.exp(s) / torch.exp(s).sum(1, keepdim=True))).sum(1).mean()
    expected = 0.1 * hard + 0.9 * by_hand(s, t, 4.0)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(logits, s)
    assert teacher.inputs[0] is x  # exactly the student's view
    loss.backward()
    assert student.linear.weight.grad is not None and teacher.linear.weight.grad is None  # no gradient to the teacher


def test_a_two_view_recipe_gets_the_soft_term_on_each_view():
    x, targets = fixed_batch()
    student, teacher = Recording(1), Recording(2)
    dual = DualCutout(alpha=0.1, size=4)
    kd = Distillation(Recipe(dual_cutout=dual), teacher, temperature=2.0, alpha=0.5)
    views = dual.views(x, torch.Generator().manual_seed(0))
    loss, _ = kd.loss(student, views, targets)
    assert [v is w for v, w in zip(teacher.inputs, views)] == [True, True]
    hard, _ = dual(lambda v: student.linear(v.flatten(1)), views, targets, Recipe().criterion)
    soft = [by_hand(student.linear(v.flatten(1)), teacher.linear(v.flatten(1)), 2.0) for v in views]
    torch.testing.assert_close(loss, 0.5 * hard + 0.5 * (soft[0] + soft[1]) / 2, rtol=1e-5, atol=1e-6)


def test_the_teacher_sees_the_mixed_batch():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    teacher = Recording(2)
    kd = Distillation(Recipe(mixup=Mixup(1.0)), teacher, temperature=4.0, alpha=0.9)
    views, targets = kd.batch(images, torch.arange(6) % 5, 5, lambda u: u.float() / 255, torch.Generator().manual_seed(0))
    assert not torch.equal(targets, F.one_hot(torch.arange(6) % 5, 5).float())  # mixed
    kd.loss(Recording(1), views, targets)
    assert teacher.inputs[0] is views


# -- runs ----------------------------------------------------------------------------------------------

def student_args(teacher_id: str) -> tuple[str, ...]:
    return "model=lenet", f"{KEY}={teacher_id}", "train.epochs=2", "train.distill.temperature=2"


@pytest.fixture(scope="module")
def student(store: Store, teacher) -> tuple[float, str, Path]:
    """A LeNet student of the ResNet teacher, by its run id, 2 epochs: (test error, run id, run dir)."""
    return store.run("student", *student_args(teacher[0]))


def test_student_trains_from_a_teacher_run_id_and_logs_it(store, teacher, student):
    teacher_id, _ = teacher
    error, run_id, _ = student
    run = store.get(run_id)
    assert run.info.status == "FINISHED" and 0.0 <= error <= 100.0
    assert run.data.params[KEY] == teacher_id and run.data.params["train.distill.teacher_run_id"] == teacher_id
    assert run.data.tags["teacher_run_id"] == teacher_id
    assert run.data.tags["teacher_config_hash"] == store.get(teacher_id).data.tags["config_hash"]
    assert [m.step for m in store.client.get_metric_history(run_id, "test_error")] == [1, 2]
    # A rerun of the finished student is the same configuration: skipped with its result.
    cfg, ctx = store.compose("student", *student_args(teacher_id))
    assert train(cfg, ctx) == error
    assert [m.step for m in store.client.get_metric_history(run_id, "test_error")] == [1, 2]


def test_alpha_zero_equals_a_plain_run_bitwise(store, teacher):
    _, teacher_dir = teacher
    plain = store.run("plain", *TINY_MODEL, "train.epochs=2", "aug=[cutout,mixup]")
    distilled = store.run("alpha0", *TINY_MODEL, "train.epochs=2", "aug=[cutout,mixup]", f"{KEY}={teacher_dir}",
                          "train.distill.alpha=0")
    assert store.get(distilled[1]).data.tags["teacher_run_id"] == teacher[0]
    for key in ("train_loss", "train_error", "test_loss", "test_error"):
        a, b = (store.client.get_metric_history(run_id, key) for _, run_id, _ in (plain, distilled))
        assert [(m.step, m.value) for m in a] == [(m.step, m.value) for m in b], key
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True)["model"] for *_, d in (plain, distilled))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_distillation_changes_training(store, teacher):
    """The soft term reaches the gradients: alpha > 0 trains other weights than a plain run (same seed)."""
    _, teacher_dir = teacher
    weights = []
    for extra in ([], [f"{KEY}={teacher_dir}"]):
        run = build_run(compose_config([*QUICK, *TINY_MODEL, f"tracking.uri={store.uri}", *extra]))
        trainer = Trainer(run.parts, Path("unused"), {}, on_epoch=lambda epoch, metrics: None)
        trainer.train_step(torch.arange(run.parts.settings.batch_size))
        weights.append(trainer.model.state_dict())
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0] if weights[0][k].is_floating_point())


def test_resume_with_a_teacher_gives_identical_results(store, teacher, student):
    cfg, ctx = store.compose("resumed", *student_args(teacher[0]))
    train_until_killed(cfg, ctx)
    assert train(cfg, ctx) == student[0]
    resumed_id = store.run_id(ctx.output_dir)
    for key in ("train_loss", "test_loss"):
        a, b = (store.client.get_metric_history(r, key) for r in (student[1], resumed_id))
        assert [(m.step, m.value) for m in a] == [(m.step, m.value) for m in b], key


# -- identity --------------------------------------------------------------------------------------------

def hash_of(store: Store, *overrides: str) -> str:
    cfg = compose_config([*QUICK, f"tracking.uri={store.uri}", *overrides])
    return config_hash(identity(OmegaConf.to_container(cfg, resolve=True), find_teacher(cfg)))


def test_the_same_teacher_named_by_id_dir_or_checkpoint_is_one_identity(store, teacher):
    teacher_id, teacher_dir = teacher
    named = {hash_of(store, f"{KEY}={ref}") for ref in (teacher_id, teacher_dir, teacher_dir / "checkpoint.pt")}
    assert len(named) == 1
    assert named != {hash_of(store, f"{KEY}={teacher_id}", "train.distill.alpha=0.5")}
    plain = compose_config([*QUICK, f"tracking.uri={store.uri}"])
    resolved = OmegaConf.to_container(plain, resolve=True)
    del resolved["train"]["distill"]
    assert hash_of(store) == config_hash(resolved)  # a plain run's identity is what it was before KD


# -- bad teachers, before training -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_teachers(store: Store, teacher) -> dict[str, str]:
    """Each bad teacher and the words its one-line error must hold."""
    cfg, ctx = store.compose("diverged", *TINY_MODEL, "optim.lr=1e30")
    with pytest.raises(Diverged):  # recorded as FAILED, then raised
        train(cfg, ctx)
    failed_id = store.run_id(ctx.output_dir)
    _, _, five_classes = store.run("five", *TINY_MODEL, "data.num_classes=5")
    stray = store.root / "stray"
    stray.mkdir()
    return {
        str(store.root / "nowhere"): "neither an existing run dir or checkpoint file nor an MLflow run id",
        "0" * 32: f"no MLflow run {'0' * 32} in {store.uri}",
        failed_id: "is FAILED, not FINISHED",
        str(five_classes): "was trained on fake (5 classes, 3x32x32), but this run trains on fake (10 classes",
        str(stray): "has no readable mlflow_run.json",
    }


def test_bad_teachers_are_one_line_errors_before_training(store, bad_teachers):
    for ref, words in bad_teachers.items():
        cfg, ctx = store.compose("bad", *TINY_MODEL, f"{KEY}={ref}")
        with pytest.raises(ConfigError) as caught:
            train(cfg, ctx)
        message = str(caught.value)
        assert message.startswith(f"{KEY}: ") and "\n" not in message and words in message, message
        with pytest.raises(ConfigError, match=KEY):  # pre-flight (sweeps check, run.py -m) says it too
            build_on_meta(cfg)
    assert not (store.root / "bad").exists()  # nothing was trained or written


def test_a_checkpoint_that_is_not_the_end_of_training_is_refused(store, teacher, tmp_path):
    teacher_id, teacher_dir = teacher
    run = find_run(teacher_id, store.uri, KEY)
    state = torch.load(teacher_dir / "checkpoint.pt", weights_only=True)
    state["final"] = None
    torch.save(state, tmp_path / "mid.pt")
    with pytest.raises(ConfigError, match=r"mid.pt is not the end of training \(epoch 1\)$"):
        load_model(type(run)(**{**run.__dict__, "checkpoint": tmp_path / "mid.pt"}), torch.device("cpu"), KEY)


@pytest.mark.parametrize("override, rule", [
    ("train.distill.alpha=1.5", "train.distill.alpha: must be in [0, 1]"),
    ("train.distill.temperature=0", "train.distill.temperature: must be a number > 0"),
])
def test_bad_settings_are_config_errors(override, rule):
    with pytest.raises(ConfigError, match=re.escape(rule)):
        build_on_meta(compose_config([*QUICK, override]))


def test_preflight_builds_a_student_with_its_teacher_on_meta(store, teacher):
    build_on_meta(compose_config([*QUICK, *TINY_MODEL, f"tracking.uri={store.uri}", f"{KEY}={teacher[0]}"]))


def test_the_teacher_is_rebuilt_without_touching_the_random_stream(store, teacher):
    run = find_run(str(teacher[1]), store.uri, KEY)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    model = load_model(run, torch.device("cpu"), KEY).model
    assert torch.equal(torch.get_rng_state(), before)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    saved = torch.load(run.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


# -- the graph step ----------------------------------------------------------------------------------------

def test_distillation_loss_traces_as_one_graph(store, teacher):
    """CPU proxy for capture (see tests/test_steps.py): the step's gradients with the teacher's forward
    in them trace as one Dynamo graph: no host sync, no data-dependent branch."""
    if not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        pytest.skip("this torch's Dynamo cannot trace Tensor.backward()")
    cfg = compose_config([*QUICK, *TINY_MODEL, f"tracking.uri={store.uri}", f"{KEY}={teacher[0]}", "train.step=graph"])
    step = build_run(cfg, graph_on_cpu=True).parts.train_step
    views, targets = step.body.batch(torch.arange(16))
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        torch.compile(step.body.gradients, fullgraph=True, backend="eager")(views, targets)
    torch._dynamo.reset()
    assert all(p.grad is not None for p in step.body.params)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_step_captures_the_teacher_and_trains_as_the_eager_step(store, teacher):
    trainers = []
    for step in ("eager", "graph"):
        cfg = compose_config([*QUICK, *TINY_MODEL, f"tracking.uri={store.uri}", f"{KEY}={teacher[0]}",
                              "train.device=cuda", f"train.step={step}", "train.batch_size=32", "aug=none"])
        run = build_run(cfg)
        trainer = Trainer(run.parts, Path("unused"), {}, on_epoch=lambda epoch, metrics: None)
        perm = trainer.data.permutation(trainer.generator)
        for i in range(8):  # 3 warm-up steps, the capture, replays
            trainer.train_step(perm[i * 32 : (i + 1) * 32])
        trainers.append(trainer)
    eager, graph = trainers
    assert graph.stepper.graph is not None and math.isfinite(graph.sums[0].item())
    for key, value in eager.model.state_dict().items():
        torch.testing.assert_close(graph.model.state_dict()[key], value, rtol=2e-3, atol=2e-4, msg=key)
