"""A study's reproduction table: per row cifarzoo's aggregate over its runs beside the number the
source printed, their difference, the run count and min-max, and a verdict.

A row is `reproduced` when the published number lies within cifarzoo's min-max over the row's runs
widened by the tolerance (the study's `tolerance:`, else 0.2 pp on MNIST-like data and 0.3 pp
otherwise), `differs` when it does not, `not run` without finished runs; a row whose source has no
number says `no number`. Runs are found by their params: a run belongs to the row whose overrides
it logged (the row with the most overrides when several fit, e.g. a widened row beside its default)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.aggregate import aggregate, key_rank
from analysis.formats import csv_text, latex, markdown, metric_header
from analysis.labels import display_value, format_duration, header, label, metric_name
from sweeps.published import NOT_ROW_KEYS, Row, mismatches, normal, parse, published_rows
from sweeps.study import Study

MNIST_LIKE = {"mnist", "fashion_mnist", "kmnist"}
TOLERANCE = {"mnist_like": 0.2, "other": 0.3}
VERDICTS = ("reproduced", "differs", "not run", "no number")
ROW_TAG = "tags.study_row"


@dataclass
class Line:
    """One row of the reproduction table."""

    row: Row
    label: str
    tolerance: float
    runs: int = 0
    value: float = math.nan  # cifarzoo's aggregate
    low: float = math.nan
    high: float = math.nan
    train_time_s: float = math.nan
    run_ids: list[str] = field(default_factory=list)

    @property
    def difference(self) -> float:
        return self.value - self.row.error if self.row.error is not None and self.runs else math.nan

    @property
    def verdict(self) -> str:
        if self.row.error is None:
            return "no number"
        if not self.runs:
            return "not run"
        inside = self.low - self.tolerance - 1e-9 <= self.row.error <= self.high + self.tolerance + 1e-9
        return "reproduced" if inside else "differs"


@dataclass
class Reproduction:
    study: Study
    lines: list[Line]
    metric: str
    agg: str
    columns: list[str]  # the row settings shown as columns (those the label does not say)
    excluded: str = ""  # runs of the rows left out (failed, running, ...)
    unmatched: int = 0  # runs of the experiment that belong to no row
    experiment_found: bool = True
    experiment: str = ""  # where the runs came from (the study's unless tracking.experiment= says)
    shared: list[str] = field(default_factory=list)  # overrides read off another experiment's runs

    @property
    def counts(self) -> Counter:
        return Counter(line.verdict for line in self.lines)

    @property
    def run_rows(self) -> int:
        return sum(1 for line in self.lines if line.runs)


def tolerance_of(study: Study, settings: dict[str, Any]) -> float:
    if study.tolerance is not None:
        return study.tolerance
    return TOLERANCE["mnist_like" if settings.get("data") in MNIST_LIKE else "other"]


def reproduce(study: Study, runs: pd.DataFrame | None, extra: list[str] = (), agg: str = "median",
              metric: str | None = None, experiment_found: bool = True, experiment: str | None = None) -> Reproduction:
    """The study's table from the runs of its experiment (`None` or empty: nothing run yet). `extra`:
    overrides given after the study name, which replace the rows' own as they did for `sweeps run`.
    Runs of another experiment (`experiment`, e.g. a smoke run's) are read with the overrides they
    all share and no row has (`shared_overrides`) as if those were given too."""
    metric = metric or study.metric
    rows = published_rows(study)
    changes = dict(parse(o) for o in extra if o.split("=", 1)[0].lstrip("+~") not in NOT_ROW_KEYS)
    shared: dict[str, str] = {}
    if experiment not in (None, study.experiment) and runs is not None and not runs.empty:
        shared = shared_overrides([{**row.settings, **changes} for row in rows], runs, set(changes))
        changes.update({k: normal(v) for k, v in shared.items()})
    settings = [{**row.settings, **changes} for row in rows]
    shown = [_display(s) for s in settings]
    lines = [Line(row, label(params)[0], tolerance_of(study, s)) for row, s, params in zip(rows, settings, shown)]
    excluded, unmatched = "", 0
    if runs is not None and not runs.empty:
        owner = runs.apply(lambda run: _owner(run, settings), axis=1)
        unmatched = int((owner < 0).sum())
        mine = runs[owner >= 0].assign(**{ROW_TAG: owner[owner >= 0].astype(str)})
        if not mine.empty:
            configs = aggregate(mine, rows=[ROW_TAG], agg=agg, metric=metric)
            excluded = configs.attrs["excluded"]
            for _, config in configs.iterrows():
                line = lines[int(config[ROW_TAG])]
                line.runs, line.value, line.run_ids = int(config["runs"]), float(config[metric]), list(config["run_ids"])
                line.low, line.high = float(config[f"{metric}_min"]), float(config[f"{metric}_max"])
                line.train_time_s = float(config["train_time_s"])
                line.label = str(config["label"])  # from the runs' full params
    return Reproduction(study, lines, metric, agg, _columns(shown), excluded, unmatched, experiment_found,
                        experiment or study.experiment, [f"{k}={v}" for k, v in shared.items()])


def shared_overrides(settings: list[dict[str, Any]], runs: pd.DataFrame, given: set[str]) -> dict[str, str]:
    """Key -> logged value for the keys every row sets whose value is the same in every run and in
    no row (a smoke run's `train.epochs=1`), except the keys `given`. A key only some rows set is
    left alone: runs of the other rows log its default."""
    shared = {}
    for key in sorted(set.intersection(*(set(s) for s in settings)) - given if settings else ()):
        column = f"params.{key}"
        if column not in runs.columns or runs[column].isna().any():
            continue
        values = {normal(v) for v in runs[column]}
        if len(values) == 1 and all(s[key] != next(iter(values)) for s in settings):
            shared[key] = str(runs[column].iloc[0])
    return shared


def _owner(run: pd.Series, settings: list[dict[str, Any]]) -> int:
    """The index of the row the run belongs to (-1: none)."""
    params = {k[len("params."):]: v for k, v in run.items() if k.startswith("params.") and isinstance(v, str)}
    fits = [i for i, s in enumerate(settings) if not mismatches(s, params)]
    return max(fits, key=lambda i: len(settings[i]), default=-1)


def _display(settings: dict[str, Any]) -> dict[str, str]:
    """Row settings as the param strings the labels read."""
    def text(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, tuple):
            return "[" + ", ".join(text(v).lower() if isinstance(v, bool) else text(v) for v in value) + "]"
        return str(value)

    return {k: text(v) for k, v in settings.items()}


def _columns(shown: list[dict[str, str]]) -> list[str]:
    """The settings that tell rows apart and that some row's label does not already say (a row
    without the setting, or with it unset, shows `-`)."""
    covers = [label(params)[1] for params in shown]
    keys = {k for params in shown for k in params}
    varying = [k for k in keys if len({display_value(k, params.get(k, "")) for params in shown}) > 1]
    return sorted((k for k in varying
                   if any(k not in used and display_value(k, params.get(k, "")) != "-" for params, used in zip(shown, covers))),
                  key=key_rank)


# Rendering ------------------------------------------------------------------------------------

def _fixed(value: float, digits: int) -> str:
    """Enough decimals for a published number (3.985 from an accuracy of 96.015)."""
    if value is None or not math.isfinite(value):
        return "-"
    for places in range(digits, 4):
        if abs(round(value, places) - value) < 1e-9:
            return f"{value:.{places}f}"
    return f"{value:.{digits}f}"


def _headers(rep: Reproduction) -> tuple[list[str], str]:
    seeds = Counter(line.row.seeds for line in rep.lines).most_common(1)[0][0]
    printed = str((rep.study.published or {}).get("printed", ""))
    extra = [str(h) for h in (rep.study.published or {}).get("columns", {}).values()]
    ours = f"cifarzoo: {metric_header(rep.metric, rep.agg, seeds)}"
    published = f"Published ({printed})" if printed else "Published"
    return ["Model", *(header(k) for k in rep.columns), ours, published, "Difference", "Runs", "Min-max", "Verdict", *extra], printed


def display_rows(rep: Reproduction, digits: int = 2) -> tuple[list[str], list[list[str]], list[bool]]:
    headers, printed = _headers(rep)
    rows = []
    for line in rep.lines:
        row = line.row
        published = "n/a" if row.error is None else _fixed(row.error, digits)
        if row.error is not None and row.printed and row.printed != printed:
            published += f" ({row.printed})"
        ran = line.runs > 0
        rows.append([
            line.label,
            *(display_value(k, _display(line.row.settings).get(k, "")) for k in rep.columns),
            f"{line.value:.{digits}f}" if ran else "-",
            published,
            f"{line.difference:+.{digits}f}" if math.isfinite(line.difference) else "-",
            f"{line.runs}/{row.seeds}",
            f"{line.low:.{digits}f}-{line.high:.{digits}f}" if ran else "-",
            line.verdict,
            *(v or "-" for v in row.columns.values()),
        ])
    numeric = [False, *(False for _ in rep.columns), True, True, True, True, True, False,
               *(False for _ in headers[len(rep.columns) + 7:])]
    return headers, rows, numeric


def summary(rep: Reproduction) -> str:
    counts = rep.counts
    parts = [f"rows run {rep.run_rows}/{len(rep.lines)}",
             f"reproduced {counts['reproduced']}, differs {counts['differs']}, not run {counts['not run']}"]
    if counts["no number"]:
        parts.append(f"no published number {counts['no number']}")
    tolerances = sorted({line.tolerance for line in rep.lines})
    parts.append("tolerance " + "/".join(f"{t:g}" for t in tolerances) + " pp")
    parts.append(f"metric {rep.metric}")
    if rep.experiment != rep.study.experiment:
        parts.append(f"runs of experiment {rep.experiment}")
    return "; ".join(parts)


def footer(rep: Reproduction) -> list[str]:
    notes = [f"n/a ({line.label}): {line.row.reason}" for line in rep.lines if line.row.error is None]
    if not rep.experiment_found:
        notes.append(f"no runs yet: experiment {rep.experiment!r} is not in the store")
    if rep.shared:
        notes.append(f"every run of experiment {rep.experiment!r} has {' '.join(rep.shared)}, which no row of the "
                     "study has: read as if given after the study's name")
    if rep.unmatched:
        count, verb = ("1 run", "matches") if rep.unmatched == 1 else (f"{rep.unmatched} runs", "match")
        notes.append(f"{count} of experiment {rep.experiment!r} {verb} no row of the study (other overrides)")
    if rep.excluded:
        notes.append(rep.excluded)
    return notes


def render(rep: Reproduction, fmt: str = "markdown", digits: int = 2) -> str:
    if fmt == "json":
        return json.dumps(to_json(rep), indent=2, ensure_ascii=False)
    if fmt == "csv":
        return to_csv(rep)
    if fmt == "latex":
        return latex(*display_rows(rep, digits))
    return "\n".join([table_markdown(rep, digits), "", summary(rep), *footer(rep)])


def table_markdown(rep: Reproduction, digits: int = 2) -> str:
    return markdown(*display_rows(rep, digits))


def to_csv(rep: Reproduction) -> str:
    columns = list((rep.study.published or {}).get("columns", {}))
    head = ["Model", *(header(k) for k in rep.columns), metric_name(rep.metric), "Published", "Published runs",
            "Difference", "Runs", "Study runs", "Min", "Max", "Verdict", *columns, "Reason"]
    body = [[line.label, *(_display(line.row.settings).get(k, "") for k in rep.columns), _num(line.value),
             _num(line.row.error), line.row.printed, _num(line.difference), str(line.runs), str(line.row.seeds),
             _num(line.low), _num(line.high), line.verdict, *line.row.columns.values(), line.row.reason]
            for line in rep.lines]
    return csv_text([head, *body])


def to_json(rep: Reproduction) -> dict[str, Any]:
    counts = rep.counts
    return {
        "study": rep.study.name, "title": rep.study.title, "source": rep.study.source,
        "experiment": rep.experiment, "shared_overrides": rep.shared, "metric": rep.metric, "agg": rep.agg,
        "summary": {"rows": len(rep.lines), "rows_run": rep.run_rows, **{v: counts[v] for v in VERDICTS}},
        "rows": [{
            "model": line.label, "overrides": list(line.row.overrides), "selector": line.row.selector,
            rep.metric: _float(line.value), "min": _float(line.low), "max": _float(line.high),
            "runs": line.runs, "study_runs": line.row.seeds, "published": line.row.error,
            "published_as_printed": line.row.as_printed or None, "printed": line.row.printed,
            "reason": line.row.reason or None, "columns": line.row.columns, "difference": _float(line.difference),
            "tolerance": line.tolerance, "verdict": line.verdict, "train_time_s": _float(line.train_time_s),
            "training_time": format_duration(line.train_time_s) if line.runs else None, "run_ids": line.run_ids,
        } for line in rep.lines],
        "notes": footer(rep),
    }


def _float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _num(value: float | None) -> str:
    number = _float(value) if value is not None else None
    return "" if number is None else str(number)


def published_markdown(study: Study, digits: int = 2) -> str:
    """The study's rows with the numbers its source printed (for `sweeps show`), before any run."""
    rep = reproduce(study, None)
    headers, rows, numeric = display_rows(rep, digits)
    keep = [i for i, h in enumerate(headers) if not h.startswith("cifarzoo:") and h not in ("Difference", "Runs", "Min-max", "Verdict")]
    return markdown([headers[i] for i in keep], [[row[i] for i in keep] for row in rows], [numeric[i] for i in keep])
