"""The numbers a study's source printed, one per row of its grids, and how runs find their row.

    published:
      printed: median of 3 runs                # how the source aggregated (a row may say its own)
      unit: error                              # or accuracy: the source printed accuracy, error = 100 - it
      columns: {paper: "Test Error (in paper)"}  # further columns of the source, shown as printed
      rows:                                    # the overrides that pick a row out -> what it printed
        "model=vgg": {error: 7.29, paper: N/A}
        "aug=cutout aug.cutout.size=6": 4.82
        "aug=mixup train.epochs=600": {error: 4.81, printed: 1 run}
        "precision=fp32 train.batch_size=8192": {reason: "no result in the source"}

A row of a study is one expanded job without its seed. A selector (space-separated `key=value`, no
spaces inside a value; `!key`: the row does not set key) picks the rows whose overrides include all
of its own; every row must be
picked by exactly one selector and every selector must pick exactly one row. Values compare as
values (`1e-4` = `0.0001`, `[80,120]` = `[80, 120]`), so a run's logged params find its row too."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cifarzoo.config import GROUPS, choice_name
from sweeps.study import Study, StudyError

UNITS = ("error", "accuracy")
ENTRY_KEYS = {"error", "accuracy", "printed", "reason"}
# Keys that say where or how often a job runs, not which row it is.
NOT_ROW_KEYS = ("seed", "tracking.experiment", "tracking.uri")


@dataclass(frozen=True)
class Row:
    """One row of a study's table: its overrides, how many runs the study makes of it, and what the
    source printed for it."""

    overrides: tuple[str, ...]
    seeds: int
    selector: str = ""
    error: float | None = None  # the published test error (%), converted from accuracy if need be
    printed: str = ""  # "median of 3 runs", "1 run", as the source says
    as_printed: str = ""  # the number as the source printed it ("96.015" for an accuracy)
    reason: str = ""  # why there is no number
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        """Override key -> normalised value (what a run's params must equal)."""
        return dict(parse(o) for o in self.overrides)


def normal(value: Any) -> Any:
    """One form for a value from an override or from a logged param: `0.0001`, `1e-4` -> 0.0001;
    `True`, `true` -> True; `None`, `null` -> None (`none` stays a name); `[80, 120]` -> (80.0, 120.0)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return round(float(value), 12)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return tuple(normal(v) for v in value)
    text = str(value).strip()
    words = {"None": None, "null": None, "True": True, "true": True, "False": False, "false": False}
    if text in words:  # not `none`: a choice's name (aug=none)
        return words[text]
    try:
        return round(float(text), 12)
    except ValueError:
        pass
    if text.startswith("["):
        try:
            return normal(json.loads(text))
        except ValueError:
            pass
    return text


@lru_cache(maxsize=None)
def parse(override: str) -> tuple[str, Any]:
    """`optim.lr=0.1` -> ("optim.lr", 0.1); a group given as a list (`aug=[cutout,mixup]`) is
    logged as its choice name, `cutout+mixup`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([override])[0]
    if parsed.is_sweep_override():
        raise StudyError(f"{override}: a published row is one value per key, not a sweep")
    key, value = parsed.key_or_group, parsed.value()
    if key in GROUPS and isinstance(value, list):
        value = choice_name(value)
    return key, normal(value)


def mismatches(settings: Mapping[str, Any], params: Mapping[str, str]) -> list[str]:
    """The row's settings a run's params do not have: `key=value (logged: ...)`; none = the run is of the row."""
    return [f"{key}={value} (logged: {params.get(key, 'nothing')})" for key, value in settings.items()
            if key not in params or normal(params[key]) != value]


def study_rows(study: Study) -> list[Row]:
    """The distinct jobs without their seed, in the order the study runs them, with their seed count."""
    counts: dict[tuple[str, ...], int] = {}
    for job in study.jobs():
        row = tuple(o for o in job if o.split("=", 1)[0].lstrip("+~") not in NOT_ROW_KEYS)
        counts[row] = counts.get(row, 0) + 1
    return [Row(overrides, seeds) for overrides, seeds in counts.items()]


def published_rows(study: Study) -> list[Row]:
    """The study's rows with their published numbers; a StudyError names the first problem. A study
    file of one's own without `published:` has rows without numbers (`sweeps check` asks for them)."""
    if study.published is None:
        return [Row(row.overrides, row.seeds, reason="the study file has no published numbers")
                for row in study_rows(study)]
    rows, problems = _match(study)
    if problems:
        raise StudyError(f"{study.where}: published: {problems[0]}")
    return rows


def check_published(study: Study) -> list[str]:
    """Every problem of the study's `published:` block, one line each (for `sweeps check`)."""
    try:
        return [f"published: {p}" for p in _match(study)[1]]
    except StudyError as error:
        return [str(error)]


def _match(study: Study) -> tuple[list[Row], list[str]]:
    rows = study_rows(study)
    block = study.published
    if block is None:
        return rows, ["missing: every row needs the number its source printed, or a reason (sweeps/README.md)"]
    unknown = set(block) - {"printed", "unit", "columns", "rows"}
    if unknown:
        return rows, [f"unknown keys {sorted(unknown)} (allowed: columns, printed, rows, unit)"]
    unit = block.get("unit", "error")
    columns = block.get("columns") or {}
    if unit not in UNITS:
        return rows, [f"unit: must be error or accuracy (got {unit!r})"]
    if not isinstance(columns, dict) or set(columns) & ENTRY_KEYS:
        return rows, [f"columns: must map column names other than {sorted(ENTRY_KEYS)} to their headers"]
    entries = block.get("rows")
    if not isinstance(entries, dict) or not entries:
        return rows, ["rows: must map each row's overrides (space-separated key=value) to its number"]
    wanted = [row.settings for row in rows]
    picked: dict[int, list[str]] = {i: [] for i in range(len(rows))}
    found: dict[str, dict[str, Any]] = {}
    problems = []
    for selector, entry in entries.items():
        try:
            tokens = str(selector).split()
            absent = {t[1:] for t in tokens if t.startswith("!")}
            pairs = dict(parse(o) for o in tokens if not o.startswith("!"))
            found[selector] = _entry(entry, unit, columns, str(block.get("printed", "")))
        except StudyError as error:
            problems.append(f"{selector!r}: {error}")
            continue
        hits = [i for i, settings in enumerate(wanted)
                if all(k in settings and settings[k] == v for k, v in pairs.items()) and not absent & set(settings)]
        if len(hits) != 1:
            which = "no row" if not hits else f"{len(hits)} rows ({_rows_text(rows, hits)}); name the row by more overrides"
            problems.append(f"{selector!r} picks {which}")
        for i in hits:
            picked[i].append(selector)
    for i, selectors in picked.items():
        if not selectors:
            problems.append(f"the row {' '.join(rows[i].overrides)!r} has no number (add it, or a reason why not)")
        elif len(selectors) > 1:
            problems.append(f"the row {' '.join(rows[i].overrides)!r} is picked by {len(selectors)} selectors: {selectors}")
    matched = [
        Row(row.overrides, row.seeds, sel[0], **found[sel[0]]) if len(sel := picked[i]) == 1 and sel[0] in found else row
        for i, row in enumerate(rows)
    ]
    return matched, problems


def _entry(entry: Any, unit: str, columns: dict[str, str], printed: str) -> dict[str, Any]:
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        entry = {unit: entry}
    if not isinstance(entry, dict):
        raise StudyError(f"must be a number or a mapping with error/accuracy or reason (got {entry!r})")
    unknown = set(entry) - ENTRY_KEYS - set(columns)
    if unknown:
        raise StudyError(f"unknown keys {sorted(unknown)} (allowed: {sorted(ENTRY_KEYS | set(columns))}; "
                         "declare other columns under published.columns)")
    numbers = [k for k in ("error", "accuracy") if k in entry]
    if len(numbers) + ("reason" in entry) != 1:
        raise StudyError("needs exactly one of error, accuracy or reason")
    if "reason" in entry:
        if not isinstance(entry["reason"], str) or not entry["reason"].strip():
            raise StudyError("reason: must say why the row has no number")
        return {"reason": entry["reason"].strip(), "printed": str(entry.get("printed", "")),
                "columns": _columns(entry, columns)}
    value = entry[numbers[0]]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100 or math.isnan(value):
        raise StudyError(f"{numbers[0]}: must be a percentage (got {value!r})")
    error = round(100.0 - value, 6) if numbers[0] == "accuracy" else float(value)
    return {"error": error, "printed": str(entry.get("printed", printed)), "as_printed": _text(value),
            "columns": _columns(entry, columns)}


def _columns(entry: dict[str, Any], columns: dict[str, str]) -> dict[str, str]:
    return {name: _text(entry[name]) if name in entry else "" for name in columns}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _rows_text(rows: list[Row], hits: list[int]) -> str:
    shown = ", ".join(" ".join(rows[i].overrides) for i in hits[:2])
    return shown + (", ..." if len(hits) > 2 else "")
