"""The statistics of a study row's runs and its verdict against the published number.

Per row: n, median, mean, sample s.d. and a 95 % interval of the statistic the source printed,
compared like with like:

- `mean of N`: the t-interval of our mean (mean +- t(0.975, n-1) s / sqrt(n));
- `median of N`, `single run`, `unstated`: a percentile bootstrap interval of our median
  (10,000 resamples, a fixed generator: the same runs give the same interval);
- `best of N`: the source kept its best run, so our best (lowest error) is compared, with a
  percentile bootstrap interval of the minimum of n resampled runs; the row is flagged.

Verdicts: `reproduced` (the published number inside the interval, or, with n < 3, within the
study's tolerance of our statistic), `differs` (outside the interval), `inconclusive` (n < 3 and
outside the tolerance, or an interval wider than 2 x tolerance: too few or too noisy runs to
tell), `not run` (no finished run); rows without a number say `no number` or, where the network
that made the number is not known, `unknown network`. Run-to-run s.d. at 94-96 % accuracy is
about 0.12-0.13 pp (airbench, n = 200; Jordan 2023), so with 3 seeds the t-interval of a mean
is about +-0.32 pp."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

VERDICTS = ("reproduced", "differs", "inconclusive", "not run", "no number", "unknown network")
AGGREGATION_KINDS = ("median", "mean", "best", "single run", "unstated")
MIN_RUNS = 3  # below this the interval says too little: the tolerance decides
BOOTSTRAP_RESAMPLES = 10_000
_AGGREGATION = re.compile(r"^(median|mean|best) of (\d+)$")
# How the seeds' documents word it -> the aggregation (for `printed:` texts without `aggregation:`)
_PRINTED = [(re.compile(r"^(median|mean|average|best) of (\d+)(?: runs?)?$"), None),
            (re.compile(r"^1 run$"), "single run"), (re.compile(r"^run count not stated$"), "unstated")]


class AggregationError(ValueError):
    """An `aggregation:` that is none of the allowed forms."""


def parse_aggregation(text: str) -> tuple[str, int]:
    """`median of 3` -> ("median", 3); `single run` -> ("single run", 1); `unstated` -> ("unstated", 0)."""
    text = str(text).strip()
    if text == "single run":
        return text, 1
    if text == "unstated":
        return text, 0
    found = _AGGREGATION.match(text)
    if not found or int(found.group(2)) < 1:
        raise AggregationError(f"must be 'median of N', 'mean of N', 'best of N', 'single run' or 'unstated' (got {text!r})")
    return found.group(1), int(found.group(2))


def aggregation_from_printed(printed: str) -> str | None:
    """The aggregation a `printed:` text states (`median of 3 runs` -> `median of 3`,
    `average of 5 runs` -> `mean of 5`, `1 run` -> `single run`), or None when it states none."""
    text = str(printed).strip().lower()
    for pattern, fixed in _PRINTED:
        found = pattern.match(text)
        if found:
            if fixed:
                return fixed
            kind = "mean" if found.group(1) == "average" else found.group(1)
            return f"{kind} of {found.group(2)}" if int(found.group(2)) > 1 else "single run"
    return None


@dataclass(frozen=True)
class Stats:
    n: int
    median: float = math.nan
    mean: float = math.nan
    sd: float = math.nan
    compared: float = math.nan  # the statistic set beside the published number (median, mean or best)
    statistic: str = "median"  # which one: median | mean | best
    low: float = math.nan  # its 95 % interval
    high: float = math.nan
    interval: str = ""  # how: "t" | "bootstrap" | "" (n < 3)

    @property
    def width(self) -> float:
        return self.high - self.low


def statistics(values: list[float], aggregation: str) -> Stats:
    """The row's statistics for a source that printed `aggregation` (see the module doc)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    kind = parse_aggregation(aggregation)[0] if aggregation else "unstated"
    statistic = {"mean": "mean", "best": "best"}.get(kind, "median")
    if n == 0:
        return Stats(0, statistic=statistic)
    median, mean = float(np.median(x)), float(np.mean(x))
    sd = float(np.std(x, ddof=1)) if n > 1 else math.nan
    compared = {"mean": mean, "best": float(x.min()), "median": median}[statistic]
    if n < MIN_RUNS:
        return Stats(n, median, mean, sd, compared, statistic)
    if statistic == "mean":
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        return Stats(n, median, mean, sd, compared, statistic, mean - half, mean + half, "t")
    resamples = np.random.default_rng(0).choice(x, size=(BOOTSTRAP_RESAMPLES, n), replace=True)
    stat = resamples.min(axis=1) if statistic == "best" else np.median(resamples, axis=1)
    low, high = np.percentile(stat, [2.5, 97.5])
    return Stats(n, median, mean, sd, compared, statistic, float(low), float(high), "bootstrap")


def verdict(stats: Stats, published: float | None, tolerance: float, unknown_network: bool = False) -> str:
    """One of VERDICTS for the row (see the module doc)."""
    if unknown_network:
        return "unknown network"
    if published is None:
        return "no number"
    if stats.n == 0:
        return "not run"
    eps = 1e-9
    if stats.n < MIN_RUNS:
        return "reproduced" if abs(stats.compared - published) <= tolerance + eps else "inconclusive"
    if stats.width > 2 * tolerance + eps:
        return "inconclusive"
    return "reproduced" if stats.low - eps <= published <= stats.high + eps else "differs"


# The environment a run trained in, from its tags (cifarzoo.provenance, cifarzoo.task) and params.
ENVIRONMENT = (("tags.torch", "torch "), ("tags.cuda", "CUDA "), ("tags.device_name", ""), ("params.precision", ""),
               ("tags.train_step", "step "))


def environment(run: dict) -> str:
    """`torch 2.11.0 / CUDA 13.0 / NVIDIA H100 80GB HBM3 / fp32 / step graph` ("?" where untagged)."""
    def part(column: str, prefix: str) -> str:
        value = run.get(column)
        return f"{prefix}{value}" if isinstance(value, str) and value else f"{prefix}?"

    return " / ".join(part(column, prefix) for column, prefix in ENVIRONMENT)


def environment_text(environments: list[str]) -> str:
    """One environment, or `mixed (k)` for a row whose runs came from k environments."""
    distinct = sorted(set(environments))
    if not distinct:
        return "-"
    return distinct[0] if len(distinct) == 1 else f"mixed ({len(distinct)})"
