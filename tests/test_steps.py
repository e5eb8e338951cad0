"""The training step (`train.step`): the graph step's graph-safe form against today's eager step.

On CPU the graph step runs its graph-safe form eagerly: the batch gathered through a static index
buffer, the LR read from a device tensor during the update, the running sums added in place, and,
as built for CUDA, torch's fused optimizer (which also takes GradScaler's scale and inf flag).
N steps of it must equal N eager steps:

- around the eager step's own optimizer, bitwise: the graph-safe structure changes nothing;
- with the fused update it has on CUDA, within a tight tolerance: the fused kernels round
  differently (one fused multiply-add for momentum * buf + grad where the eager loop rounds twice,
  Adam's bias corrections folded in another order), a difference of an ulp or so per step.

The fallback of a failed capture is tested on CPU with the CUDA-only parts (side-stream warm-up,
capture) replaced by their CPU form and an injected failure. CUDA capture itself, and channels_last
(whose backward crashes this CPU torch for some convolutions), are tested by the CUDA-only tests at
the end (they skip without CUDA)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from cifarzoo import build as build_module
from cifarzoo import task
from cifarzoo.build import build_run
from cifarzoo.errors import ConfigError
from cifarzoo.loop import Trainer
from cifarzoo.steps import CaptureFailed, EagerStep, GraphStep
from cifarzoo.steps.graph import WARMUP_STEPS

TINY = ["data=fake", "data.num_train=64", "data.num_test=16", "model.depth=8", "model.base_channels=4",
        "train.batch_size=16", "train.epochs=2", "train.device=cpu"]
STEPS = 4  # of 8 in the run: the cosine LR changes at every one of them

# Every covered option at least once; options that do not interact share a case.
CASES = {
    "sgd-nesterov-cosine": [],
    "sgd-momentum-linear": ["optim.nesterov=false", "sched=linear"],
    "sgd-no_wd_on_bn-lr_scaling-sgdr": ["optim.no_weight_decay_on_bn=true", "optim.lr_scaling=linear", "sched=sgdr",
                                        "sched.t0=1"],
    "constant-linear_warmup": ["sched=constant", "sched.warmup=linear", "sched.warmup_epochs=1"],
    "multistep-exponential_warmup": ["sched=multistep", "sched.milestones=[1]", "sched.warmup=exponential",
                                     "sched.warmup_epochs=1", "train.epochs=3"],  # the milestone inside the run
    "adam": ["optim=adam"],
    "adamw": ["optim=adamw"],
    "amsgrad-no_wd_on_bn": ["optim=amsgrad", "optim.no_weight_decay_on_bn=true"],
    "amp_bf16-ghost_bn": ["precision=amp_bf16", "train.ghost_batch_size=8"],
    "amp_fp16": ["precision=amp_fp16"],
    "amp_fp16-grad_clip": ["precision=amp_fp16", "optim.grad_clip=0.5"],
    "grad_clip": ["optim.grad_clip=0.5"],
    "cutout-label_smoothing": ["aug=[cutout,label_smoothing]"],
    "random_erasing": ["aug=random_erasing"],
    "mixup": ["aug=mixup"],
    "cutmix": ["aug=cutmix"],
    "ricap": ["aug=ricap"],
    "random_resized_crop": ["aug=random_resized_crop"],
}
# Adam's for-loop update turns a tensor LR into its step size with tensor arithmetic (rounded
# otherwise than from a float): the bitwise check around the eager optimizer is for the others.
FOR_LOOP_TAKES_TENSOR_LR_BITWISE = {case for case in CASES if "adam" not in case and "amsgrad" not in case}


def config(step: str, *overrides: str):
    return compose_config([*TINY, f"train.step={step}", *overrides])


def build(step: str, *overrides: str):
    return build_run(config(step, *overrides), graph_on_cpu=True)


def trainer_of(run) -> Trainer:
    return Trainer(run.parts, Path("unused"), {}, on_epoch=lambda epoch, metrics: None)


def train(trainer: Trainer, steps: int) -> list[float]:
    b = trainer.local_batch
    perm = trainer.data.permutation(trainer.generator)
    lrs = []
    for i in range(steps):
        trainer.train_step(perm[i * b : (i + 1) * b])
        lrs.append(trainer.lr)
    return lrs


def tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Everything a step changes: weights and buffers, optimizer state, sums, random stream, loss scale."""
    out = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    for i, state in enumerate(trainer.optimizer.state_dict()["state"].values()):
        out.update({f"optim.{i}.{k}": v.float().reshape(()) if k == "step" else v for k, v in state.items()})
    out["sums"] = trainer.sums
    out["generator"] = trainer.generator.get_state()
    out.update({f"precision.{k}": torch.tensor(v) for k, v in trainer.precision.state_dict().items()})
    return out


@pytest.mark.parametrize("case", CASES)
def test_graph_step_equals_the_eager_step(case, one_thread):
    eager_cfg = config("eager", *CASES[case])
    graph_cfg = eager_cfg.copy()
    graph_cfg.train.step = "graph"
    eager = trainer_of(build_run(eager_cfg))
    initial = {k: v.clone() for k, v in eager.model.state_dict().items()}
    lrs = train(eager, STEPS)
    reference = tensors(eager)
    assert any(not torch.equal(reference[f"model.{k}"], v) for k, v in initial.items())  # the steps trained

    graph_run = build_run(graph_cfg, graph_on_cpu=True)
    assert isinstance(graph_run.parts.train_step, GraphStep) and graph_run.step.kind == "graph"
    assert all(group["fused"] for group in graph_run.parts.optimizer.param_groups)
    graph = trainer_of(graph_run)
    assert train(graph, STEPS) == lrs  # the same schedule, as plain floats in the param groups
    fused = tensors(graph)
    assert fused.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(fused[key], reference[key], rtol=1e-5, atol=1e-7, msg=key)

    if case in FOR_LOOP_TAKES_TENSOR_LR_BITWISE:  # the graph-safe structure alone changes no bit
        run = build_run(eager_cfg)
        run.parts.train_step = GraphStep(run.parts, capture=False)
        structure = trainer_of(run)
        assert train(structure, STEPS) == lrs
        for key, value in tensors(structure).items():
            assert torch.equal(value, reference[key]), key


def test_amp_fp16_skips_a_step_with_inf_gradients_in_both_steps(one_thread):
    """An inf in one gradient: GradScaler's check must skip the whole update (weights, momentum) and
    halve the scale, in the fused update of the graph step as in the eager step."""
    results = {}
    for step in ("eager", "graph"):
        trainer = trainer_of(build(step, "precision=amp_fp16"))
        train(trainer, 1)  # momentum buffers exist (graph: already from the start)
        weight = trainer.model.get_parameter("fc.weight")
        before = {k: v.clone() for k, v in tensors(trainer).items() if k.startswith(("model.", "optim."))}
        scale = trainer.precision.scaler.get_scale()
        handle = weight.register_hook(lambda grad: torch.full_like(grad, math.inf))
        train(trainer, 1)
        handle.remove()
        after = tensors(trainer)
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        # BN running statistics come from the forward pass, which did run; nothing the update writes changed.
        assert all("running_" in k or "num_batches_tracked" in k for k in changed), (step, changed)
        assert trainer.precision.scaler.get_scale() == scale / 2
        train(trainer, 1)  # and the next step updates again
        assert not torch.equal(weight, before["model.fc.weight"])
        results[step] = tensors(trainer)
    for key in results["eager"]:
        torch.testing.assert_close(results["graph"][key], results["eager"][key], rtol=1e-5, atol=1e-7, msg=key)


def test_graph_step_asked_for_on_cpu_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^train.step: graph cannot be used: train.device: a CUDA graph needs a CUDA device"):
        build_run(compose_config([*TINY, "train.step=graph"]))


@pytest.mark.parametrize(("overrides", "reason"), [
    (["optim=sam"], "optim: sam/asam"),
    (["optim=lars"], "optim: lars"),
    (["optim=adabound"], "optim: adabound"),
    (["aug=autoaugment"], "aug.autoaugment: autoaugment/randaugment"),
    (["aug=randaugment"], "aug.randaugment: autoaugment/randaugment"),
    (["aug=dual_cutout"], "aug.dual_cutout: dual_cutout"),
    (["precision=fp16"], "precision: fp16"),
    (["train.compile=true"], "train.compile:"),
])
def test_parts_that_cannot_be_captured_fall_back_or_refuse(overrides, reason):
    run = build("auto", *overrides)
    assert run.step.kind == "eager" and isinstance(run.parts.train_step, EagerStep)
    assert run.step.reason.startswith(f"train.step=auto: eager because {reason}")
    with pytest.raises(ConfigError, match=rf"^train.step: graph cannot be used: {reason}"):
        build("graph", *overrides)


def test_bad_step_value_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^train.step: must be auto, graph or eager \(got 'fast'\)"):
        build("fast")


def test_auto_on_cpu_is_eager_with_the_reason():
    run = build_run(compose_config([*TINY, "train.step=auto"]))
    assert run.step.kind == "eager"
    assert run.step.reason == "train.step=auto: eager because train.device: a CUDA graph needs a CUDA device (the run is on cpu)"


def test_graph_step_run_resumes_to_identical_results_and_is_tagged(make_run, client, monkeypatch, one_thread):
    """A run with the graph step (its CPU form) straight, and the same run killed after its epoch-1
    checkpoint and rerun: identical metrics; both runs tagged with the step and why."""
    monkeypatch.setattr(task, "build_run", functools.partial(build_run, graph_on_cpu=True))
    overrides = ["model.depth=8", "model.base_channels=4", "data.train_size=128", "train.epochs=2",
                 "train.batch_size=32", "train.step=graph", "optim=adamw", "precision=amp_fp16"]
    cfg, ctx = make_run(*overrides, "tracking.experiment=straight", out="straight")
    straight = task.train(cfg, ctx)

    cfg, ctx = make_run(*overrides, out="resumed")
    original_save = Trainer.save

    def save_then_die(self):
        original_save(self)
        if self.epoch == 1:
            raise SystemExit("killed after the epoch-1 checkpoint")

    monkeypatch.setattr(Trainer, "save", save_then_die)
    with pytest.raises(SystemExit):
        task.train(cfg, ctx)
    monkeypatch.setattr(Trainer, "save", original_save)
    assert task.train(cfg, ctx) == straight
    runs = [client.search_runs([client.get_experiment_by_name(name).experiment_id])[0] for name in ("straight", "test")]
    for key in ("train_loss", "test_error", "lr"):
        a, b = (client.get_metric_history(r.info.run_id, key) for r in runs)
        assert [(m.step, m.value) for m in a] == [(m.step, m.value) for m in b], key
    for run in runs:
        assert run.data.tags["train_step"] == "graph"
        assert run.data.tags["train_step_reason"] == "train.step=graph"
    state = torch.load(ctx.output_dir / "checkpoint.pt", weights_only=True)  # plain tensors, numbers, strings
    assert all(isinstance(group["lr"], float) and group["fused"] for group in state["optimizer"]["param_groups"])



def test_graph_safe_gradients_compile_in_one_graph(one_thread):
    """CPU proxy for "no host sync, no data-dependent shape, no graph break": Dynamo traces the
    graph-safe step's forward, loss, backward and running-sum update for the default recipe as one
    graph (fullgraph=True). Not traced here: the augmentation (Dynamo takes no op with an explicit
    torch.Generator) and the optimizer update (torch brackets every Optimizer.step with deliberate
    graph breaks); the CUDA tests below capture those."""
    if not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        pytest.skip("this torch's Dynamo cannot trace Tensor.backward()")
    run = build("graph")
    step = run.parts.train_step
    views, targets = step.body.batch(torch.arange(16))
    sums = torch.zeros(2, dtype=torch.float64)

    def gradients_and_sums() -> None:
        loss, logits = step.body.gradients(views, targets)
        sums[0] += loss * len(targets)
        sums[1] += targets.gather(1, logits.argmax(1, keepdim=True)).sum()

    with torch._dynamo.config.patch(trace_autograd_ops=True):
        torch.compile(gradients_and_sums, fullgraph=True, backend="eager")()
    torch._dynamo.reset()
    assert all(p.grad is not None for p in step.body.params) and sums[0] > 0


class CaptureOnCpu:
    """The graph step's CUDA-only parts in their CPU form: warm-up runs the body (reporting the host
    syncs it is told to), capture fails as a CUDA capture does at an op it cannot hold, before any
    kernel of the step ran (injected at the model's first forward), or succeeds with a graph whose
    first replay fails."""

    def __init__(self, monkeypatch, fail: str, syncs: tuple[str, ...] = ()) -> None:
        self.fail, self.syncs = fail, syncs
        monkeypatch.setattr(GraphStep, "_warm_up", lambda step, sums, check_syncs: self.warm_up(step, sums, check_syncs))
        monkeypatch.setattr(GraphStep, "_capture", lambda step, sums: self.capture(step, sums))

    def warm_up(self, step: GraphStep, sums: torch.Tensor, check_syncs: bool) -> list[str]:
        step._body(sums)
        return list(self.syncs) if check_syncs else []

    def capture(self, step: GraphStep, sums: torch.Tensor):
        if self.fail == "first replay":
            return BrokenGraph()

        def refuse(module, args):
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nCUDA kernel errors ...")

        handle = step.body.forward.register_forward_pre_hook(refuse)
        try:
            step._body(sums)
        finally:
            handle.remove()


class BrokenGraph:
    def replay(self) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def graph_step_on_cpu(step: str, *overrides: str) -> tuple[Trainer, list[tuple[str, str]]]:
    """A trainer whose graph step runs its capture path on CPU; the (kind, reason) changes it reports."""
    run = build(step, *overrides)
    run.parts.train_step = GraphStep(run.parts, capture=True, fallback=run.step.fallback)
    changes: list[tuple[str, str]] = []
    run.parts.train_step.on_change = lambda kind, reason: changes.append((kind, reason))
    return trainer_of(run), changes


@pytest.mark.parametrize(("fail", "syncs", "at", "part"), [
    ("capture", (), WARMUP_STEPS + 1, "capture: RuntimeError: CUDA error: operation not permitted when stream is capturing"),
    ("none", ("called a synchronizing CUDA operation",), WARMUP_STEPS,
     "last warm-up step: it synchronised with the host (called a synchronizing CUDA operation)"),
])
def test_a_failed_capture_falls_back_to_the_eager_step_with_state_intact(fail, syncs, at, part, monkeypatch, caplog,
                                                                          one_thread):
    overrides = ("precision=amp_fp16", "optim.grad_clip=0.5", "aug=cutout", "train.batch_size=8")
    steps = WARMUP_STEPS + 4  # of 8 in one permutation
    reference = trainer_of(build("graph", *overrides))  # the graph-safe form on CPU, no capture path
    train(reference, steps)

    CaptureOnCpu(monkeypatch, fail, syncs)
    trainer, changes = graph_step_on_cpu("auto", *overrides)
    with caplog.at_level("WARNING", logger="cifarzoo"):
        train(trainer, steps)
    reason = f"train.step=auto: eager from step {at} on, because the CUDA graph failed in the {part}"
    assert [(kind, r[:len(reason)]) for kind, r in changes] == [("eager", reason)]
    assert "\n" not in changes[0][1]
    assert [r.getMessage() for r in caplog.records if "training step" in r.getMessage()] == \
        [f"training step: {changes[0][1]}"]
    assert trainer.stepper.kind == "eager" and trainer.stepper.graph is None
    expected = tensors(reference)
    for key, value in tensors(trainer).items():  # the failed capture changed nothing: the same steps
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize(("fail", "part"), [("capture", "capture"), ("first replay", "first replay")])
def test_a_failed_capture_under_train_step_graph_is_a_one_line_error(fail, part, monkeypatch, one_thread):
    CaptureOnCpu(monkeypatch, fail)
    trainer, changes = graph_step_on_cpu("graph")
    train(trainer, WARMUP_STEPS)
    with pytest.raises(CaptureFailed) as error:
        train(trainer, 1)
    assert str(error.value).startswith(f"train.step=graph: the CUDA graph failed in the {part} (step {WARMUP_STEPS + 1}): "
                                       "RuntimeError: CUDA error: ")
    assert "\n" not in str(error.value) and not changes


def test_a_fallback_retags_the_run(make_run, client, monkeypatch, one_thread):
    CaptureOnCpu(monkeypatch, "capture")
    monkeypatch.setattr(task, "build_run", functools.partial(build_run, graph_on_cpu=True))
    original = build_module.make_step
    monkeypatch.setattr(build_module, "make_step", lambda step, parts: (
        GraphStep(parts, capture=True, fallback=step.fallback) if step.kind == "graph" else original(step, parts)))
    cfg, ctx = make_run("model.depth=8", "model.base_channels=4", "data.train_size=128", "train.epochs=1",
                        "train.batch_size=16", "train.step=auto")
    task.train(cfg, ctx)
    run = client.search_runs([client.get_experiment_by_name("test").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["train_step"] == "eager"
    assert run.data.tags["train_step_reason"].startswith(
        f"train.step=auto: eager from step {WARMUP_STEPS + 1} on, because the CUDA graph failed in the capture: ")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = ["train.device=cuda", "aug=none"]  # aug=none: the eager and the replayed step see the same batches


@needs_cuda
def test_cuda_graph_step_trains_as_the_eager_step_without_host_syncs():
    steps = 8  # 3 warm-up steps, the capture, replays
    eager_cfg = config("eager", *CUDA)
    graph_cfg = eager_cfg.copy()
    graph_cfg.train.step = "auto"
    eager, graph_run = trainer_of(build_run(eager_cfg)), build_run(graph_cfg)
    assert graph_run.step.kind == "graph", graph_run.step.reason
    graph = trainer_of(graph_run)
    lrs = train(eager, steps)
    b, perm = graph.local_batch, graph.data.permutation(graph.generator)
    for i in range(steps):
        if i == 4:  # captured at step 3: from here on every step is a replay, which must not sync
            torch.cuda.set_sync_debug_mode("error")
        try:
            graph.train_step(perm[i * b : (i + 1) * b])
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert graph.lr == lrs[i]
    assert graph.stepper.graph is not None
    a, g = tensors(eager), tensors(graph)
    for key in a:
        if key != "generator":
            torch.testing.assert_close(g[key].cpu(), a[key].cpu(), rtol=2e-3, atol=2e-4, msg=key)


@needs_cuda
def test_cuda_graph_step_skips_an_overflowing_amp_fp16_step_inside_the_graph():
    graph = trainer_of(build_run(config("graph", *CUDA, "precision=amp_fp16")))
    train(graph, 5)  # warm-up, capture, one replay
    scaler = graph.precision.scaler
    scaler._scale.fill_(2.0**100)  # the scaled fp16 gradients overflow to inf
    before = {k: v.clone() for k, v in tensors(graph).items() if k.startswith("optim.") or k.endswith("weight")}
    train(graph, 1)
    after = tensors(graph)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert scaler.get_scale() == 2.0**99
