"""`python -m cifarzoo.evaluate RUN`: a trained model's error, or the model as a file.

RUN is a run's output dir or its MLflow run id. The network is rebuilt from the run's config and
its checkpoint (`cifarzoo.trained.load_trained`), then evaluated on the run's dataset (the same
subset, `data.train_size` / `data.test_size`, and the run's precision mode, so the test error of
a finished run is the `test_error` it logged): error (%), loss, and the error of each class.

  --split train          the run's training split (not augmented) instead of the test split
  --tta flip             test-time augmentation: each image's class probabilities are the mean of
                         the softmax probabilities of the image and of its horizontal flip
  --log                  add the result to the MLflow run: metrics eval_<split>_error and
                         eval_<split>_loss (eval_tta_flip_<split>_... with --tta flip) at the
                         checkpoint's epoch, and the per-class errors as evaluation/<name>.json;
                         without it nothing is written anywhere
  --export FORMAT PATH   write the model instead of evaluating it (no data needed): torchscript,
                         pt2 (torch.export), onnx, or state_dict; all but state_dict take float32
                         images in [0, 1] of shape (N, C, H, W) and return logits (the dataset's
                         normalisation is inside); see cifarzoo/export.py

A run that has not finished training is evaluated with its latest checkpoint, with a warning.
Bad input (no such run or dir, no checkpoint, no tracking store) is one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cifarzoo.checkpoint import CheckpointError
from cifarzoo.config import build
from cifarzoo.data import DeviceData
from cifarzoo.errors import ConfigError
from cifarzoo.export import EXPORTERS, export
from cifarzoo.trained import TrainedModel, load_trained


def _plain(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(net(images).float(), dim=1)


def _flip(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """log of the mean of the softmax probabilities of the images and their horizontal flips."""
    both = torch.stack([F.log_softmax(net(images).float(), dim=1),
                        F.log_softmax(net(images.flip(3)).float(), dim=1)])
    return torch.logsumexp(both, dim=0) - torch.log(torch.tensor(2.0, device=images.device))


# Test-time augmentation: log class probabilities of a batch of normalised images.
TTA: dict[str, Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]] = {"none": _plain, "flip": _flip}


@dataclass
class Evaluation:
    split: str
    tta: str
    images: int
    error: float  # %
    loss: float  # mean negative log-likelihood of the true class
    class_error: list[float]  # % per class (NaN for a class with no image in the split)
    class_images: list[int]

    @property
    def metric_prefix(self) -> str:
        return f"eval_{'' if self.tta == 'none' else f'tta_{self.tta}_'}{self.split}"


@torch.no_grad()
def evaluate(trained: TrainedModel, split: str = "test", tta: str = "none", batch_size: int | None = None) -> Evaluation:
    """Error, loss and per-class error of the run's model on its `split` ("test" or "train"),
    under the run's precision mode, with test-time augmentation `tta` (a key of TTA)."""
    if split not in ("test", "train"):
        raise ConfigError("--split", "must be test or train", split)
    if tta not in TTA:
        raise ConfigError("--tta", f"must be one of {', '.join(TTA)}", tta)
    ds, device = trained.dataset, trained.device
    data = DeviceData(ds.load(), ds.mean, ds.std, device, ds.num_classes, channels_last=False)
    images, labels = (data.test_x, data.test_y) if split == "test" else (data.train_x, data.train_y)
    precision = build(trained.cfg.precision)
    precision.setup(device)
    net = precision.prepare(copy.deepcopy(trained.model)).eval()
    batch = batch_size or int(trained.cfg.train.eval_batch_size)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    wrong = torch.zeros(ds.num_classes, dtype=torch.int64, device=device)
    for i in range(0, len(images), batch):
        x, y = data.normalize(images[i : i + batch]), labels[i : i + batch]
        with precision.autocast():
            log_probs = TTA[tta](net, x)
        loss_sum += F.nll_loss(log_probs, y, reduction="sum")
        wrong += torch.bincount(y[log_probs.argmax(1) != y], minlength=ds.num_classes)
    counts = torch.bincount(labels, minlength=ds.num_classes).tolist()
    wrong_list, n = wrong.tolist(), len(labels)
    return Evaluation(split, tta, n, 100.0 * sum(wrong_list) / n, loss_sum.item() / n,
                      [100.0 * w / c if c else float("nan") for w, c in zip(wrong_list, counts)], counts)


def log_to_run(trained: TrainedModel, result: Evaluation) -> None:
    """Add `result` to the run's MLflow run (see --log)."""
    run = trained.run
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=run.tracking_uri)
    prefix = result.metric_prefix
    client.log_metric(run.run_id, f"{prefix}_error", result.error, step=trained.epoch)
    client.log_metric(run.run_id, f"{prefix}_loss", result.loss, step=trained.epoch)
    client.log_dict(run.run_id, asdict(result), f"evaluation/{prefix[len('eval_'):]}.json")


def report(trained: TrainedModel, result: Evaluation) -> str:
    how = {"none": "", "flip": ", tta flip (mean softmax of image and horizontal flip)"}[result.tta]
    lines = [f"{result.split} error {result.error:.2f}% (loss {result.loss:.4f}) on {result.images} images{how}",
             "per-class error % (class: error):"]
    cells = [f"{k:>3}: {e:6.2f}" for k, e in enumerate(result.class_error)]
    lines += ["  " + "   ".join(cells[i : i + 10]) for i in range(0, len(cells), 10)]
    return "\n".join(lines)


def headline(trained: TrainedModel) -> str:
    run = trained.run
    name = f"MLflow run {run.run_id} ({run.run_dir})" if run.run_id else str(run.run_dir)
    epochs = int(trained.cfg.train.epochs)
    state = "finished" if trained.finished else f"NOT finished, step {trained.step} of epoch {trained.epoch + 1}"
    return (f"{name}: {type(trained.model).__name__} on {trained.dataset.name}, weights after epoch "
            f"{trained.epoch}/{epochs} ({state}), on {trained.device}")


def parser() -> argparse.ArgumentParser:
    intro, details = __doc__.split("\n\n", 2)[1:]
    p = argparse.ArgumentParser(prog="python -m cifarzoo.evaluate", description=f"{__doc__.splitlines()[0]}\n\n{intro}",
                                epilog=details, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the run's output dir, or its MLflow run id")
    p.add_argument("--tracking-uri", default=None,
                   help="the MLflow store to find a run id in, also tracking.uri=URI (default: $MLFLOW_TRACKING_URI or outputs/mlflow.db; "
                        "a run dir's own mlflow_run.json names its store)")
    p.add_argument("--split", choices=("test", "train"), default="test", help="default: %(default)s")
    p.add_argument("--tta", choices=tuple(TTA), default="none", help="test-time augmentation (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's train.eval_batch_size")
    p.add_argument("--data-root", default=None, help="where the dataset is on this machine (default: $CIFARZOO_DATA_ROOT or <repo>/data; "
                   "never the stored config's data.root, a path from the tracking store)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    p.add_argument("--log", action="store_true", help="add the result to the MLflow run")
    p.add_argument("--export", nargs=2, metavar=("FORMAT", "PATH"), default=None,
                   help=f"write the model as FORMAT ({', '.join(EXPORTERS)}) to PATH instead of evaluating it")
    return p


def run(args: argparse.Namespace) -> None:
    if args.export is not None and args.export[0] not in EXPORTERS:
        raise ConfigError("--export", f"must be one of {', '.join(EXPORTERS)}", args.export[0])
    if args.batch_size is not None and args.batch_size <= 0:
        raise ConfigError("--batch-size", "must be a positive int", args.batch_size)
    trained = load_trained(args.run, args.tracking_uri, args.device, args.data_root)
    if args.log and trained.run.tracking_uri is None:
        raise ConfigError("--log", "the run has no MLflow run in a store on this machine to log to",
                          str(trained.run.run_dir))
    print(headline(trained), file=sys.stderr)
    if not trained.finished:
        print("cifarzoo: warning: the run has not finished training: these are its latest checkpoint's weights",
              file=sys.stderr)
    if args.export is not None:
        fmt, path = args.export[0], Path(args.export[1])
        note = {"source": str(trained.run.run_id or trained.run.run_dir), "epoch": trained.epoch,
                "model": _container(trained.cfg.model), "in_channels": trained.dataset.channels,
                "num_classes": trained.dataset.num_classes, "image_size": trained.dataset.image_size}
        export(trained.classifier(), fmt, path, trained.input_shape, note)
        print(f"wrote {fmt} to {path}" + (f" (and {path}.json)" if fmt == "state_dict" else ""))
        return
    result = evaluate(trained, args.split, args.tta, args.batch_size)
    print(json.dumps({**asdict(result), "run_id": trained.run.run_id, "run_dir": str(trained.run.run_dir),
                      "epoch": trained.epoch, "finished": trained.finished}) if args.json else report(trained, result))
    if args.log:
        log_to_run(trained, result)
        print(f"logged {result.metric_prefix}_error and _loss to MLflow run {trained.run.run_id}", file=sys.stderr)


def _container(node: object) -> object:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def main(argv: Sequence[str] | None = None) -> int:
    from cifarzoo.cli import words_as_flags

    args = parser().parse_args(words_as_flags(sys.argv[1:] if argv is None else argv))
    try:
        run(args)
    except (ConfigError, CheckpointError) as error:
        print(f"cifarzoo: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
