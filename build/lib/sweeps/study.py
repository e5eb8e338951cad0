"""A study: one of the seeds' tables as a list of multiruns into one MLflow experiment.

`sweeps/<name>.yaml`:

    title: ResNet-preact-20 on CIFAR-10 with Cutout, Random Erasing and Mixup
    source: "000_pytorch_image_classification_early.txt, table 'ResNet-preact-20 | 5.14 | 160 | 38m'"
    experiment: preact20-aug          # the table: python -m analysis table --experiment preact20-aug
    overrides: [model=resnet_preact, model.depth=20, optim.lr=0.2, train.epochs=160]
    grids:                            # one `run.py -m` each, values comma-separated as on the command line
      - ["aug=standard,random_erasing,mixup", "seed=1,2,3"]
      - ["aug=cutout", "aug.cutout.size=6,8,10,12,14,16", "seed=1,2,3"]

A table whose rows are no single grid (a baseline, then a parameter scan) is several grids.
`published:` holds the numbers the source printed, one per row (sweeps/published.py);
`metric:` the metric they are compared with (`best_test_error` where the source reports the best
epoch), `tolerance:` how far outside cifarzoo's min-max a published number may lie and still count
as reproduced (default by dataset: 0.2 pp for MNIST-like data, 0.3 pp otherwise)."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml

SWEEPS_DIR = Path(__file__).resolve().parent
KEYS = {"title", "source", "experiment", "overrides", "grids", "notes", "published", "metric", "tolerance"}


class StudyError(ValueError):
    """A malformed study file; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    source: str
    experiment: str
    overrides: tuple[str, ...]
    grids: tuple[tuple[str, ...], ...]
    notes: str = ""
    published: dict | None = None  # as written; sweeps.published reads it
    metric: str = "test_error"
    tolerance: float | None = None  # None: by dataset
    where: str = ""  # the file, for messages

    def multiruns(self) -> list[list[str]]:
        """The overrides of each `run.py -m` call (the experiment last but one, user's extras after)."""
        return [[*self.overrides, *grid, f"tracking.experiment={self.experiment}"] for grid in self.grids]

    def jobs(self) -> list[list[str]]:
        """Every run of the study: each multirun's overrides expanded as Hydra's basic sweeper does."""
        return [job for overrides in self.multiruns() for job in expand(overrides)]


def expand(overrides: list[str]) -> list[list[str]]:
    """The cartesian product of the sweep overrides (`key=a,b`), in Hydra's order."""
    return [list(job) for job in itertools.product(*(_choices(o) for o in overrides))]


@functools.lru_cache(maxsize=None)
def _choices(override: str) -> tuple[str, ...]:
    """`key=a,b` -> (`key=a`, `key=b`); Hydra's parser is slow and studies repeat their overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (parsed,) = OverridesParser.create().parse_overrides([override])
    key = parsed.get_key_element()
    if parsed.is_sweep_override():
        return tuple(f"{key}={value}" for value in parsed.sweep_string_iterator())
    return (f"{key}={parsed.get_value_element_as_str()}",)


def names() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def load(study: str) -> Study:
    """A study by name (`sweeps/<name>.yaml`) or by the path of a yaml file of one's own."""
    path = Path(study) if study.endswith((".yaml", ".yml")) else SWEEPS_DIR / f"{study}.yaml"
    name = path.stem
    if not path.exists():
        raise StudyError(f"{study}: no such study file ({path}); studies here: python -m sweeps list")
    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # C: 10x faster
    except yaml.YAMLError as error:
        raise StudyError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    where = str(path) if path.parent != SWEEPS_DIR else f"sweeps/{path.name}"
    if not isinstance(data, dict):
        raise StudyError(f"{where}: must be a mapping with keys {sorted(KEYS)}")
    unknown = set(data) - KEYS
    if unknown:
        raise StudyError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(KEYS)})")
    for key in ("title", "source", "experiment"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise StudyError(f"{where}: {key}: must be a non-empty string")
    overrides = data.get("overrides", [])
    quote = ' (quote a sweep inside [...]: "seed=1,2,3", or YAML splits it at the commas)'
    if not _strings(overrides):
        raise StudyError(f"{where}: overrides: must be a list of key=value strings{quote}")
    grids = data.get("grids")
    if not isinstance(grids, list) or not grids or not all(_strings(g) for g in grids):
        raise StudyError(f"{where}: grids: must be a non-empty list of lists of key=value strings{quote}")
    if any(o.split("=", 1)[0].lstrip("+~").startswith("tracking.experiment") for o in overrides + sum(grids, [])):
        raise StudyError(f"{where}: set the experiment with `experiment:`, not tracking.experiment")
    if not isinstance(data.get("metric", "test_error"), str):
        raise StudyError(f"{where}: metric: must be a metric name such as test_error or best_test_error")
    tolerance = data.get("tolerance")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0):
        raise StudyError(f"{where}: tolerance: must be a number of percentage points >= 0 (got {tolerance!r})")
    published = data.get("published")
    if published is not None and not isinstance(published, dict):
        raise StudyError(f"{where}: published: must be a mapping with `rows:` (see sweeps/README.md)")
    return Study(name, data["title"], data["source"], data["experiment"], tuple(overrides),
                 tuple(tuple(g) for g in grids), str(data.get("notes", "")), published,
                 data.get("metric", "test_error"), None if tolerance is None else float(tolerance), where)


def _strings(items: object) -> bool:
    return isinstance(items, list) and all(isinstance(i, str) and "=" in i for i in items)
