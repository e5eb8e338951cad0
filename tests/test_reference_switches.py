"""Switches that build what the seeds' original code did where it differs from the paper:
hysts' VGG with one ReLU per stage, the architecture study's ResNets without identity skips and
with stem-only norm variants, hysts' --fp16 (BatchNorm in float32, loss in half) and the tricks
seed's black Random Erasing box; hysts' early shake-shake, PyramidNet stem, ResNet-preact-164 stage 1
and DenseNet stem, the shake-shake shortcut shift and pprp's stem bias, and a scheduler stepped before
each epoch (issue 23). Each changes what it says; the defaults are today's networks, with their
config_hash unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import QUICK, compose_config
from cifarzoo.aug import RandomErasing
from cifarzoo.build import build_components, build_run
from cifarzoo.config import build_model
from cifarzoo.errors import ConfigError
from cifarzoo.models import count_parameters
from cifarzoo.models.resnet_imagenet_style import BasicBlock
from cifarzoo.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def model_of(*overrides: str, meta: bool = False) -> nn.Module:
    cfg = compose_config(list(overrides))
    if meta:  # shapes only: full-size networks in milliseconds
        with torch.device("meta"):
            return build_model(cfg.model, 3, 10)
    torch.manual_seed(0)
    return build_model(cfg.model, 3, 10)


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


# -- hysts' VGG: one ReLU per stage ----------------------------------------------------------

def test_vgg_relu_per_stage_first_keeps_one_relu_per_stage_after_the_first_conv():
    every, first = model_of("model=vgg", meta=True), model_of("model=vgg", "model.relu_per_stage=first", meta=True)
    assert (count(every, nn.ReLU), count(first, nn.ReLU)) == (13, 5)
    assert count_parameters(first) == count_parameters(every) == 14_728_266
    for stage in first.stages:  # conv BN ReLU, then conv BN for the others, then the pool
        kinds = [type(m) for m in stage]
        assert kinds[:3] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] and kinds.count(nn.ReLU) == 1
        assert kinds[3:] == [nn.Conv2d, nn.BatchNorm2d] * (len(kinds[3:]) // 2) + [nn.MaxPool2d]


def test_vgg_without_the_later_relus_passes_negative_values_on():
    model = model_of("model=vgg", "model.channels=[8,8]", "model.layers=[2,2]", "model.relu_per_stage=first").eval()
    seen = []
    model.stages[0][3].register_forward_hook(lambda m, i, out: seen.append(out))  # BN of the 2nd conv
    pooled = []
    model.stages[0][4].register_forward_hook(lambda m, i, out: pooled.append(i[0]))
    model(torch.randn(2, 3, 32, 32))
    assert (seen[0] < 0).any() and torch.equal(pooled[0], seen[0])  # no ReLU between BN and pool


def test_vgg_relu_per_stage_rejects_other_values():
    with pytest.raises(ConfigError, match=r"^model.relu_per_stage: must be all or first \(got 'last'\)$"):
        model_of("model=vgg", "model.relu_per_stage=last", meta=True)


# -- the architecture study's ResNets: identity skips and stem-only norms ---------------------

@pytest.mark.parametrize("option", ["resnet_imagenet_style", "resnext_small"])
def test_without_identity_shortcuts_only_projection_blocks_are_residual(option):
    plain = model_of(f"model={option}", "model.identity_shortcuts=false", meta=True)
    textbook = model_of(f"model={option}", meta=True)
    blocks = [m for m in plain.modules() if isinstance(m, BasicBlock)]
    assert [b.shortcut is None for b in blocks] == [True, True, False, True, False, True, False, True]
    assert all(b.shortcut is not None for b in textbook.modules() if isinstance(b, BasicBlock))
    assert count_parameters(plain) == count_parameters(textbook)  # 11,173,962 / 10,021,194 either way


def test_a_block_without_identity_shortcut_does_not_add_its_input():
    model = model_of("model=resnet_imagenet_style", "model.depth=10", "model.widen=0.25",
                     "model.identity_shortcuts=false").eval()
    block = model.stages[0][0]
    x = torch.randn(2, 16, 8, 8)
    branch = block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x)))))
    assert torch.allclose(block(x), torch.relu(branch))
    textbook = model_of("model=resnet_imagenet_style", "model.depth=10", "model.widen=0.25").eval().stages[0][0]
    assert torch.allclose(textbook(x), torch.relu(branch + x))  # same weights (same seed), plus the skip


@pytest.mark.parametrize(("norm", "kind"), [("group", nn.GroupNorm), ("layer", nn.GroupNorm),
                                            ("instance", nn.InstanceNorm2d)])
def test_norm_scope_stem_changes_only_the_stems_norm(norm, kind):
    stem_only = model_of("model=resnet_imagenet_style", f"model.norm={norm}", "model.norm_scope=stem", meta=True)
    everywhere = model_of("model=resnet_imagenet_style", f"model.norm={norm}", meta=True)
    assert isinstance(stem_only.bn, kind) and isinstance(everywhere.bn, kind)
    assert (count(stem_only, kind), count(stem_only, nn.BatchNorm2d)) == (1, 2 * 8 + 3)
    assert (count(everywhere, kind), count(everywhere, nn.BatchNorm2d)) == (2 * 8 + 3 + 1, 0)
    assert count_parameters(stem_only) == 11_173_962


@pytest.mark.parametrize(("override", "message"), [
    ("model.norm_scope=blocks", r"^model.norm_scope: must be all or stem \(got 'blocks'\)$"),
    ("model.identity_shortcuts=1", r"^model.identity_shortcuts: must be true or false \(got 1\)$"),
])
def test_arch_switches_reject_bad_values(override, message):
    with pytest.raises(ConfigError, match=message):
        model_of("model=resnet_imagenet_style", override, meta=True)


# -- hysts' --fp16: BatchNorm in float32, the loss on the half logits -------------------------

HYSTS_FP16 = ("precision=fp16", "precision.keep_batchnorm_fp32=true", "precision.loss_in_half=true")


def test_fp16_keep_batchnorm_fp32_keeps_bn_parameters_and_statistics_in_float32():
    run = build_run(compose_config([*QUICK, "model.depth=8", "data.image_size=8", *HYSTS_FP16]))
    model = run.parts.model
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {t.dtype for bn in bns for t in [*bn.parameters(), bn.running_mean, bn.running_var]} == {torch.float32}
    others = [p for m in model.modules() if not isinstance(m, nn.BatchNorm2d) for p in m.parameters(recurse=False)]
    assert {p.dtype for p in others} == {torch.float16}
    seen = []
    bns[0].register_forward_hook(lambda m, i, out: seen.append((i[0].dtype, out.dtype)))
    views, targets = run.parts.aug.batch(run.parts.data.train_x[:8], run.parts.data.train_y[:8],
                                         run.parts.data.num_classes, run.parts.data.normalize, run.parts.generator)
    loss, logits = run.parts.aug.loss(model, views, targets)
    assert seen[0] == (torch.float16, torch.float16)  # half in, half out, as cuDNN's mixed BatchNorm
    assert logits.dtype == torch.float16 and loss.dtype == torch.float16


def test_fp16_defaults_are_todays_half_batchnorm_and_float32_loss():
    run = build_run(compose_config([*QUICK, "model.depth=8", "data.image_size=8", "precision=fp16"]))
    assert {p.dtype for p in run.parts.model.parameters()} == {torch.float16}
    views, targets = run.parts.aug.batch(run.parts.data.train_x[:8], run.parts.data.train_y[:8],
                                         run.parts.data.num_classes, run.parts.data.normalize, run.parts.generator)
    assert run.parts.aug.loss(run.parts.model, views, targets)[0].dtype == torch.float32


def test_hysts_fp16_takes_training_steps_with_float32_batchnorm(tmp_path):
    run = build_run(compose_config([*QUICK, "model.depth=8", "optim.lr=0.05", "data.image_size=8",
                                    "train.batch_size=16", *HYSTS_FP16]))  # half convs are slow on CPU
    trainer = Trainer(run.parts, tmp_path / "checkpoint.pt", {}, lambda *args: None)
    bn = next(m for m in run.parts.model.modules() if isinstance(m, nn.BatchNorm2d))
    before = [p.detach().clone() for p in run.parts.model.parameters()]
    for step in range(2):
        trainer.train_step(torch.arange(16 * step, 16 * (step + 1)))
    after = list(run.parts.model.parameters())
    assert all(torch.isfinite(p).all() and p.dtype == q.dtype for p, q in zip(after, before))
    assert all(not torch.equal(p, q) for p, q in zip(after, before))
    assert bn.running_mean.dtype == torch.float32 and bn.running_mean.any() and torch.isfinite(trainer.sums).all()


def test_fp16_switches_reject_non_booleans():
    with pytest.raises(ConfigError, match=r"^precision.loss_in_half: must be true or false \(got 'yes'\)$"):
        build_components(compose_config([*QUICK, "precision=fp16", "precision.loss_in_half=yes"]))


# -- the tricks seed's Random Erasing: a black box ---------------------------------------------

def test_random_erasing_black_fills_pixel_value_zero_in_every_channel():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    erase = RandomErasing(prob=1.0, fill="black")
    erase.use_normalization(mean, std)
    x = torch.full((256, 3, 32, 32), 5.0)
    gen = torch.Generator().manual_seed(3)
    out = erase(x, gen)
    pixels = out * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    erased = (out != 5).all(1)
    assert erased.flatten(1).any(1).all()  # every image gets its box (p(fit) ~ 0.95 per draw, 20 draws)
    assert torch.allclose(pixels.permute(1, 0, 2, 3)[:, erased], torch.zeros(1), atol=1e-6)  # black
    assert ((out == 5).all(1) | erased).all()  # a pixel is erased in all channels or in none


def test_random_erasing_black_in_a_run_erases_to_uint8_zero():
    c = build_components(compose_config([*QUICK, "aug=random_erasing", "aug.random_erasing.fill=black",
                                         "aug.random_erasing.prob=1.0", "aug.crop=null", "aug.flip=null"]))
    images = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    mean, std = torch.tensor(c.dataset.mean).view(1, 3, 1, 1), torch.tensor(c.dataset.std).view(1, 3, 1, 1)
    x, _ = c.aug.batch(images, torch.zeros(64, dtype=torch.long), 10, lambda u: (u.float() / 255 - mean) / std,
                       torch.Generator().manual_seed(0))
    pixels = ((x * std + mean) * 255).round()
    assert set(pixels.unique().tolist()) == {0.0, 200.0}
    assert (pixels == 0).flatten(1).any(1).all()


def test_random_erasing_black_needs_the_normalisation():
    with pytest.raises(RuntimeError, match="fill=black needs the dataset's normalisation"):
        RandomErasing(prob=1.0, fill="black")(torch.zeros(2, 3, 8, 8), torch.Generator())


# -- issue 23: the networks and schedule of the code that made the study numbers ---------------
# Counts of hysts' early code (107b946, built from the reference files), of pprp's stem with its
# bias, and of the paper/official networks that stay the defaults.

@pytest.mark.parametrize(("overrides", "reference", "default"), [
    (("model=shake_shake", "model.variant=hysts_2018"), 2_932_266, 2_923_162),
    (("model=shake_shake", "model.stem_bias=true"), 2_923_162 + 16, 2_923_162),
    (("model=shake_shake", "model.shortcut_shift=left_up"), 2_923_162, 2_923_162),
    (("model=pyramidnet", "model.block=bottleneck", "model.depth=164", "model.stem_times_expansion=true"),
     27_218_517, 27_216_021),
    (("model=resnet_preact", "model.block=bottleneck", "model.depth=164", "model.stage1_expansion=false"),
     1_619_290, 1_703_258),
    (("model=densenet", "model.block=basic", "model.depth=100", "model.compression=1.0", "model.stem_channels=24"),
     7_083_538, 6_979_642),
])
def test_reference_switch_builds_the_reference_count_and_the_default_the_paper(overrides, reference, default):
    assert count_parameters(model_of(*overrides, meta=True)) == reference
    assert count_parameters(model_of(*overrides[:-1], meta=True)) == default


def test_pyramidnet_stem_times_expansion_widens_only_the_stem_and_the_first_unit_input():
    early = model_of("model=pyramidnet", "model.block=bottleneck", "model.depth=164", "model.stem_times_expansion=true",
                     meta=True)
    assert (early.conv.out_channels, early.bn0.num_features) == (64, 64)
    assert early.stages[0][0].branch[1].in_channels == 64  # the first unit's conv1x1 (after its BN)
    basic = model_of("model=pyramidnet", "model.stem_times_expansion=true", meta=True)
    assert basic.conv.out_channels == 16  # basic units: expansion 1


def test_resnet_preact_stage1_without_expansion_keeps_16_channels_and_4_wide_bottlenecks():
    hysts = model_of("model=resnet_preact", "model.block=bottleneck", "model.depth=164",
                     "model.stage1_expansion=false", meta=True)
    first, second = hysts.stages[0][0], hysts.stages[1][0]
    assert (first.conv1.in_channels, first.conv1.out_channels, first.conv3.out_channels) == (16, 4, 16)
    assert isinstance(first.shortcut, nn.Identity)  # 16 in, 16 out: hysts' stage 1 has no projection
    assert (second.conv1.in_channels, second.conv3.out_channels) == (16, 128)


def test_densenet_stem_channels_sets_the_stem_and_null_keeps_the_papers_rule():
    assert model_of("model=densenet", "model.block=basic", "model.depth=40", "model.compression=1.0",
                    "model.stem_channels=24", meta=True).conv.out_channels == 24
    assert model_of("model=densenet", "model.block=basic", "model.depth=40", "model.compression=1.0",
                    meta=True).conv.out_channels == 16


def test_shake_shake_hysts_2018_layout():
    early = model_of("model=shake_shake", "model.variant=hysts_2018", meta=True)
    official = model_of("model=shake_shake", meta=True)
    assert early.stem[0].out_channels == 32 and isinstance(early.stem[-1], nn.ReLU)
    assert official.stem[0].out_channels == 16 and not isinstance(official.stem[-1], nn.ReLU)
    assert isinstance(early.stages[0][0].shortcut, nn.Identity)
    assert not isinstance(official.stages[0][0].shortcut, nn.Identity)
    assert isinstance(early.head, nn.Identity) and isinstance(official.head, nn.ReLU)
    assert early.stages[1][0].shortcut.shift == "left_up" and official.stages[1][0].shortcut.shift == "right_down"
    overridden = model_of("model=shake_shake", "model.variant=hysts_2018", "model.shortcut_shift=right_down", meta=True)
    assert overridden.stages[2][0].shortcut.shift == "right_down"


def test_shake_shake_hysts_2018_pools_negative_features_and_its_stem_output_is_non_negative():
    model = model_of("model=shake_shake", "model.variant=hysts_2018", "model.depth=8", "model.base_channels=4").eval()
    seen = {}
    model.stem.register_forward_hook(lambda m, i, out: seen.setdefault("stem", out))
    model.stages.register_forward_hook(lambda m, i, out: seen.setdefault("stages", out))
    logits = model(torch.randn(2, 3, 16, 16))
    assert (seen["stem"] >= 0).all() and (seen["stages"] < 0).any()
    pooled = seen["stages"].mean((2, 3))  # no ReLU between the last block and the pooling
    assert torch.allclose(logits, model.fc(pooled), atol=1e-6)


@pytest.mark.parametrize(("shift", "sampled"), [("right_down", (-1, -1)), ("left_up", (1, 1))])
def test_shortcut_shift_direction_by_hand(shift, sampled):
    from cifarzoo.models.shake_shake import TwoPathShortcut

    skip = TwoPathShortcut(1, 2, stride=2, shift=shift).eval()
    with torch.no_grad():
        skip.conv1.weight.fill_(1.0)
        skip.conv2.weight.fill_(1.0)
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    y = skip(x)[0, 1] * (1 + skip.bn.eps) ** 0.5  # path 2, BN's eval scaling undone
    dy, dx = sampled  # path 2 at output (i, j) sees input pixel (2i + dy, 2j + dx), 0 outside
    expected = torch.tensor([[x[0, 0, 2 * i + dy, 2 * j + dx].item() if 0 <= 2 * i + dy < 4 and 0 <= 2 * j + dx < 4
                              else 0.0 for j in range(2)] for i in range(2)])
    assert torch.allclose(y, expected)


def test_shake_shake_stem_bias_is_on_the_stem_conv_only():
    model = model_of("model=shake_shake", "model.stem_bias=true", meta=True)
    assert model.stem[0].bias is not None
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d) and m is not model.stem[0])


@pytest.mark.parametrize(("overrides", "message"), [
    (("model=shake_shake", "model.variant=hysts"), r"^model.variant: must be official or hysts_2018"),
    (("model=shake_shake", "model.shortcut_shift=up"), r"^model.shortcut_shift: must be right_down, left_up or null"),
    (("model=shake_shake", "model.stem_bias=1"), r"^model.stem_bias: must be true or false"),
    (("model=shake_shake", "model.branch=bottleneck", "model.depth=29", "model.variant=hysts_2018"),
     r"^model.branch: model.variant, model.shortcut_shift and model.stem_bias apply to basic branches only"),
    (("model=pyramidnet", "model.stem_times_expansion=yes"), r"^model.stem_times_expansion: must be true or false"),
    (("model=resnet_preact", "model.stage1_expansion=0"), r"^model.stage1_expansion: must be true or false"),
    (("model=densenet", "model.stem_channels=0"), r"^model.stem_channels: must be an int >= 1 or null"),
])
def test_reference_switches_reject_bad_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        model_of(*overrides, meta=True)


# -- sched.step_at: the scheduler stepped before each epoch (pprp 7bf6ee9) ---------------------

def epoch_lrs(*overrides: str, steps: int = 2, epochs: int = 4) -> list[float]:
    """The LR of each epoch's first and last step under the composed schedule (optim.lr 0.1)."""
    from cifarzoo.config import build

    schedule = build(compose_config(list(overrides)).sched)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched, seen = schedule.build(opt, steps, epochs), []
    for _ in range(steps * epochs):
        seen.append(round(opt.param_groups[0]["lr"], 9))
        opt.step()
        sched.step()
    return seen


def test_step_at_epoch_start_lands_multistep_decays_one_epoch_early():
    end = epoch_lrs("sched=multistep", "sched.milestones=[2]")
    start = epoch_lrs("sched=multistep", "sched.milestones=[2]", "sched.step_at=epoch_start")
    assert end == [0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01]
    assert start == [0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]


def test_step_at_epoch_start_runs_the_last_cosine_epoch_at_lr_zero():
    end = epoch_lrs("sched=cosine")
    start = epoch_lrs("sched=cosine", "sched.step_at=epoch_start")
    assert start[:-2] == end[2:] and start[-2:] == [0.0, 0.0] and min(end) > 0


def test_step_at_rejects_other_values():
    with pytest.raises(ConfigError, match=r"^sched.step_at: must be epoch_end or epoch_start \(got 'before'\)$"):
        epoch_lrs("sched=cosine", "sched.step_at=before")


# -- defaults unchanged: the new keys at their defaults leave config_hash as it was ------------

# config_hash of these default configs before the switches existed (main at 5e0f7a7)
HASHES_BEFORE = {
    "model=shake_shake": "571d9053edec9716",
    "model=pyramidnet model.block=bottleneck model.depth=164": "13d1ac0b785dcca6",
    "model=resnet_preact": "558d52a8c5ffe6b4",
    "model=se_resnet_preact": "bc3fc912e6cfab8e",
    "model=densenet model.block=basic model.compression=1.0 model.depth=40": "0acdd020bcc18f20",
    "sched=multistep": "a49e45cf53dc8a37",
    "sched=sgdr": "5cf91f72b2502189",
}


def resolved_of(overrides: str) -> dict:
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(compose_config(overrides.split()), resolve=True)
    resolved["train"]["world_size"] = 1  # as cifarzoo.task adds it
    return resolved


@pytest.mark.parametrize("overrides", list(HASHES_BEFORE))
def test_new_keys_at_their_defaults_keep_the_config_hash_of_existing_runs(overrides):
    from cifarzoo.config import config_hash

    assert config_hash(resolved_of(overrides)) == HASHES_BEFORE[overrides]


@pytest.mark.parametrize(("overrides", "changed"), [
    ("model=shake_shake", "model.variant=hysts_2018"), ("model=shake_shake", "model.shortcut_shift=left_up"),
    ("model=shake_shake", "model.stem_bias=true"), ("model=pyramidnet", "model.stem_times_expansion=true"),
    ("model=resnet_preact", "model.stage1_expansion=false"), ("model=densenet", "model.stem_channels=24"),
    ("sched=cosine", "sched.step_at=epoch_start"),
])
def test_each_switch_away_from_its_default_changes_the_hash(overrides, changed):
    from cifarzoo.config import HASH_NEUTRAL, config_hash

    assert config_hash(resolved_of(f"{overrides} {changed}")) != config_hash(resolved_of(overrides))
    group, key = changed.split("=")[0].split(".")
    assert any(g == group and k == key for g, _, k in HASH_NEUTRAL)
