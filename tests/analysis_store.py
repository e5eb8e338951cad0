"""Real MLflow sqlite stores with known runs, logged the way cifarzoo's tracker logs them: params =
flattened config + group choices + model.num_params, per-epoch metrics with step = epoch,
train_time_s at the end, tags overrides/config_hash/sweep/output_dir, failure_reason on FAILED."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

BASE = {
    "seed": "1",
    "train.epochs": "4",
    "train.batch_size": "128",
    "train.eval_every": "1",
    "train.eval_batch_size": "1024",
    "train.checkpoint_every": "1",
    "train.device": "auto",
    "data": "cifar10",
    "data.root": "/data",
    "data.download": "False",
    "data.train_size": "None",
    "data.test_size": "None",
    "tracking.uri": "None",
    "tracking.experiment": "cifarzoo",
    "optim": "sgd",
    "optim.lr": "0.1",
    "optim.momentum": "0.9",
    "optim.nesterov": "True",
    "optim.weight_decay": "0.0005",
    "sched": "cosine",
    "sched.lr_min_factor": "0.0",
    "precision": "fp32",
    "aug": "standard",
    "aug.crop.padding": "4",
    "aug.flip.prob": "0.5",
    "model": "resnet_preact",
    "model.num_params": "272474",
}

MODELS = {
    "resnet_preact": {
        "model.depth": "20", "model.block": "basic", "model.base_channels": "16", "model.widen": "1",
        "model.remove_first_relu": "False", "model.add_last_bn": "False", "model.preact_stage": "[true, true, true]",
        "model.activation": "relu", "model.norm": "batch",
    },
    "wrn": {"model.depth": "28", "model.widen": "10", "model.drop_rate": "0.0", "model.base_channels": "16",
            "model.activation": "relu", "model.norm": "batch"},
    "densenet": {"model.depth": "100", "model.block": "bottleneck", "model.growth_rate": "12",
                 "model.compression": "0.5", "model.drop_rate": "0.0"},
    "pyramidnet": {"model.depth": "110", "model.block": "basic", "model.alpha": "270", "model.base_channels": "16",
                   "model.shakedrop_prob": "0.0"},
    "resnext": {"model.depth": "29", "model.cardinality": "8", "model.base_channels": "64"},
    "shake_shake": {"model.depth": "26", "model.base_channels": "32", "model.shake_forward": "shake",
                    "model.shake_backward": "shake", "model.shake_level": "image", "model.branch": "basic",
                    "model.cardinality": "1"},
}

SCHEDS = {"cosine": {"sched.lr_min_factor": "0.0"}, "multistep": {"sched.milestones": "[2, 3]", "sched.gamma": "0.1"}}


def params_for(**overrides: str) -> dict[str, str]:
    """A full param record: the base config with the chosen model/sched keys, then overrides
    given as keyword arguments with `__` for dots (`train__batch_size="256"`)."""
    changes = {k.replace("__", "."): str(v) for k, v in overrides.items()}
    params = dict(BASE)
    model = changes.get("model", params["model"])
    sched = changes.get("sched", params["sched"])
    params = {k: v for k, v in params.items() if not k.startswith(("model.", "sched."))}
    params.update({"model.num_params": "1000", **MODELS[model], **SCHEDS[sched]})
    aug = changes.get("aug", "standard")
    if aug.startswith("cutout"):
        params["aug.cutout.size"] = "16"
    params.update(changes)
    return params


@dataclass
class Store:
    uri: str
    client: MlflowClient
    ids: dict[str, list[str]] = field(default_factory=dict)  # name -> run ids, in logging order

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found else self.client.create_experiment(name)

    def log(
        self,
        name: str,
        experiment: str,
        params: dict[str, str],
        test_errors: list[float],
        train_time_s: float | None = None,
        status: str = "FINISHED",
        failure_reason: str | None = None,
    ) -> str:
        """One run; `test_errors[i]` is epoch i+1's test error (the last one is the result)."""
        overrides = " ".join(f"{k}={v}" for k, v in params.items() if BASE.get(k) != v and not k.startswith("model."))
        tags = {"overrides": overrides, "config_hash": str(abs(hash(json.dumps(
            {k: v for k, v in params.items() if k != "seed"}, sort_keys=True))))[:16],
            "sweep": f"/outputs/multirun/{experiment}", "output_dir": f"/outputs/multirun/{experiment}/{name}",
            "git_commit": "0" * 40}
        run = self.client.create_run(self.experiment(experiment), run_name=name, tags=tags)
        run_id = run.info.run_id
        metrics = []
        for epoch, error in enumerate(test_errors, start=1):
            values = {"train_loss": 2.0 / epoch, "train_error": error + 1.0, "test_loss": error / 10,
                      "test_error": error, "lr": 0.1 / epoch, "epoch_time_s": 30.0, "images_per_s": 1000.0}
            metrics += [Metric(k, v, 1_700_000_000_000 + epoch, epoch) for k, v in values.items()]
        if train_time_s is not None:
            metrics.append(Metric("train_time_s", train_time_s, 1_700_000_000_000 + 99, len(test_errors)))
        all_params = {**params, "tracking.experiment": experiment}
        self.client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in all_params.items()],
                              tags=[RunTag("failure_reason", failure_reason)] if failure_reason else [])
        if status == "FAILED" and failure_reason == "diverged":
            self.client.set_tag(run_id, "diverged_epoch", str(len(test_errors) + 1))
        if status != "RUNNING":
            self.client.set_terminated(run_id, status)
        self.ids.setdefault(name, []).append(run_id)
        return run_id


def curve(final: float, epochs: int = 4) -> list[float]:
    """Test error per epoch, falling to `final`."""
    return [round(final + 3.0 * (epochs - e), 2) for e in range(1, epochs + 1)]


def build(path: Path) -> Store:
    """Two experiments.

    lr-study (ResNet-preact-20; batch size x initial LR x schedule):
      cosine    bs128 lr0.1: 3 seeds, final errors 8.10 8.30 8.05, times 1440 1500 1380 s
      cosine    bs128 lr0.2: 3 seeds, 7.90 7.70 8.00, times 1500 1520 1480 s
      cosine    bs256 lr0.1: 3 seeds, 8.40 8.60 8.50, times 1200 1260 1210 s
      cosine    bs256 lr0.2: 1 finished (9.00, 1150 s), 1 FAILED (diverged), 1 RUNNING
      multistep bs128 lr0.1: 5 seeds, 8.2 8.4 8.3 8.1 8.6, times 11160 s each (3h06m)
    zoo: one run per model (WRN-28-10: 3, 2 of them at 4 epochs and one at 6 epochs), a FAILED
      run with an exception's text and a KILLED one.
    resnet-depths (ResNet-preact depth x augmentation, 2 seeds each):
      standard: depth 8 10.0 10.4, depth 14 9.0 9.2, depth 20 8.0 8.2
      cutout:   depth 8  9.0  9.4, depth 14 8.0 8.2, depth 20 7.0 7.2
    """
    uri = f"sqlite:///{path}"
    store = Store(uri, MlflowClient(tracking_uri=uri))
    lr = "lr-study"
    for (bs, rate), finals, times in [
        (("128", "0.1"), [8.10, 8.30, 8.05], [1440, 1500, 1380]),
        (("128", "0.2"), [7.90, 7.70, 8.00], [1500, 1520, 1480]),
        (("256", "0.1"), [8.40, 8.60, 8.50], [1200, 1260, 1210]),
    ]:
        for seed, (final, seconds) in enumerate(zip(finals, times), start=1):
            store.log(f"bs{bs}-lr{rate}", lr, params_for(train__batch_size=bs, optim__lr=rate, seed=str(seed)),
                      curve(final), seconds)
    store.log("bs256-lr0.2", lr, params_for(train__batch_size="256", optim__lr="0.2", seed="1"), curve(9.0), 1150)
    store.log("bs256-lr0.2-diverged", lr, params_for(train__batch_size="256", optim__lr="0.2", seed="2"),
              [60.0, 90.0], status="FAILED", failure_reason="diverged")
    store.log("bs256-lr0.2-running", lr, params_for(train__batch_size="256", optim__lr="0.2", seed="3"),
              [20.0], status="RUNNING")
    for seed, final in enumerate([8.2, 8.4, 8.3, 8.1, 8.6], start=1):
        store.log("multistep", lr, params_for(sched="multistep", seed=str(seed)), curve(final), 11160)

    zoo = "zoo"
    store.log("wide-cutout", zoo, params_for(model__widen="4", aug="cutout"), curve(4.30), 9420)
    store.log("preact-164", zoo, params_for(model__depth="164", model__block="bottleneck"), curve(5.90), 14460)
    for seed, final in enumerate([4.03, 4.10, 3.95], start=1):
        store.log("wrn", zoo, params_for(model="wrn", seed=str(seed)), curve(final), 58200)
    store.log("densenet", zoo, params_for(model="densenet"), curve(4.69), 55200)
    store.log("pyramidnet", zoo, params_for(model="pyramidnet"), curve(3.92), 87120)
    store.log("resnext", zoo, params_for(model="resnext"), curve(3.97), 154200)
    store.log("shake", zoo, params_for(model="shake_shake", train__epochs="6"), curve(3.68, 6), 121740)
    store.log("wrn-oom", zoo, params_for(model="wrn", seed="4"), [50.0], status="FAILED",
              failure_reason="RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\nTraceback ...")
    store.log("wrn-killed", zoo, params_for(model="wrn", seed="5"), [50.0, 40.0], status="KILLED")
    for depth, base in [("8", 10.0), ("14", 9.0), ("20", 8.0)]:
        for aug, gain in [("standard", 0.0), ("cutout", 1.0)]:
            for seed, spread in [(1, 0.0), (2, 0.2 if depth != "8" else 0.4)]:
                store.log(f"depth{depth}-{aug}", "resnet-depths",
                          params_for(model__depth=depth, aug=aug, seed=str(seed)), curve(base - gain + spread), 600)
    return store
