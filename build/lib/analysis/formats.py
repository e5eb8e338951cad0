"""Tables in the seeds' style as markdown, csv, latex or json.

Markdown and latex show display text ("8.10 (1 run)", "3h06m"); csv and json carry the numbers
(error, runs, seconds) for spreadsheets and scripts. The exclusion footer goes under a
markdown table and into json; csv and latex keep their output clean and the CLI prints the
footer on stderr instead."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence

import pandas as pd

from analysis.aggregate import Grid, typical_runs
from analysis.labels import display_value, format_duration, header, metric_name
from analysis.runs import natural_key

FORMATS = ("markdown", "csv", "latex", "json")
_AGG_WORDS = {"median": "median", "mean": "mean", "mean_std": "mean ± std", "min": "min", "max": "max"}


def metric_header(metric: str, agg: str, runs: int) -> str:
    """"Test Error (median of 3 runs)", "Test Error (1 run)"."""
    if runs == 1:
        return f"{metric_name(metric)} (1 run)"
    return f"{metric_name(metric)} ({_AGG_WORDS[agg]} of {runs} runs)"


def metric_cell(config: pd.Series, metric: str, agg: str, typical: int, digits: int) -> str:
    """"4.03", "4.03 ± 0.12", "3.87 (1 run)", "4.62 (median of 5 runs)"."""
    value, runs = config[metric], int(config["runs"])
    text = f"{value:.{digits}f}"
    if agg == "mean_std" and runs > 1:
        text += f" ± {config[f'{metric}_std']:.{digits}f}"
    if runs != typical:
        if runs == 1:
            text += " (1 run)"
        elif agg == "mean_std":
            text += f" ({runs} runs)"
        else:
            text += f" ({_AGG_WORDS[agg]} of {runs} runs)"
    return text


def _number(value: float, places: int = 6) -> str:
    return "" if value is None or not math.isfinite(value) else str(round(float(value), places))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# Flat tables ----------------------------------------------------------------------------------

def display_table(configs: pd.DataFrame, digits: int = 2) -> tuple[list[str], list[list[str]], list[bool]]:
    """Headers, cells and which columns are numeric (right-aligned) of the seeds' table."""
    metric, agg = configs.attrs["metric"], configs.attrs["agg"]
    typical = configs.attrs["runs_per_row"]
    shown = configs.attrs["columns"]
    headers = ["Model", *(header(k) for k in shown), metric_header(metric, agg, typical), "Training Time"]
    rows = [
        [config["label"], *(display_value(k, config[k]) for k in shown),
         metric_cell(config, metric, agg, typical, digits), format_duration(config["train_time_s"])]
        for _, config in configs.iterrows()
    ]
    numeric = [False, *(all(_is_number(c[k]) for _, c in configs.iterrows()) for k in shown), True, True]
    return headers, rows, numeric


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    cells = [[c.replace("|", "\\|") for c in row] for row in [headers, *rows]]
    widths = [max(3, *(len(row[i]) for row in cells)) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if num else "-" * (w + 2) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def latex(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """A booktabs tabular."""
    spec = "".join("r" if num else "l" for num in numeric)
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(latex_escape(h) for h in headers) + r" \\",
             "\\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)


def csv_text(rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().rstrip("\n")


def _raw_headers(configs: pd.DataFrame) -> list[str]:
    metric, agg = configs.attrs["metric"], configs.attrs["agg"]
    name = metric_name(metric)
    stat = ["mean", "std"] if agg == "mean_std" else [agg]
    return [f"{name} ({s})" for s in stat] + ["Runs", "Training Time (s)"]


def _raw_values(config: pd.Series, metric: str, agg: str) -> list[str]:
    values = [_number(config[metric])]
    if agg == "mean_std":
        values.append(_number(config[f"{metric}_std"]))
    return [*values, str(int(config["runs"])), _number(config["train_time_s"], 1)]


def table_csv(configs: pd.DataFrame) -> str:
    metric, agg, shown = configs.attrs["metric"], configs.attrs["agg"], configs.attrs["columns"]
    rows: list[list[str]] = [["Model", *(header(k) for k in shown), *_raw_headers(configs)]]
    for _, config in configs.iterrows():
        rows.append([config["label"], *(config[k] for k in shown), *_raw_values(config, metric, agg)])
    return csv_text(rows)


def _config_json(config: pd.Series, keys: Sequence[str], metric: str) -> dict[str, object]:
    def num(value: float) -> float | None:
        return None if value is None or not math.isfinite(value) else round(float(value), 6)

    return {
        "model": config["label"],
        "params": {k: config[k] for k in keys},
        metric: num(config[metric]),
        f"{metric}_std": num(config[f"{metric}_std"]),
        f"{metric}_min": num(config[f"{metric}_min"]),
        f"{metric}_max": num(config[f"{metric}_max"]),
        "runs": int(config["runs"]),
        "train_time_s": num(config["train_time_s"]),
        "run_ids": list(config["run_ids"]),
    }


def _json_head(configs: pd.DataFrame) -> dict[str, object]:
    return {"metric": configs.attrs["metric"], "agg": configs.attrs["agg"]}


def _json_excluded(configs: pd.DataFrame) -> dict[str, object]:
    return {"summary": configs.attrs["excluded"], "runs": configs.attrs["excluded_runs"]}


def table_json(configs: pd.DataFrame, digits: int = 2) -> str:
    headers, rows, _ = display_table(configs, digits)
    keys, metric = configs.attrs["keys"], configs.attrs["metric"]
    document = {
        **_json_head(configs),
        "runs_per_row": configs.attrs["runs_per_row"],
        "keys": keys,
        "headers": headers,
        "rows": [
            {**_config_json(config, keys, metric), "cells": cells}
            for (_, config), cells in zip(configs.iterrows(), rows)
        ],
        "excluded": _json_excluded(configs),
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def render_table(configs: pd.DataFrame, fmt: str = "markdown", digits: int = 2) -> str:
    """The table of `aggregate`'s configurations; markdown ends with the exclusion footer."""
    if fmt == "json":
        return table_json(configs, digits)
    if fmt == "csv":
        return table_csv(configs)
    headers, rows, numeric = display_table(configs, digits)
    if fmt == "latex":
        return latex(headers, rows, numeric)
    text = markdown(headers, rows, numeric)
    return text + (f"\n\n{configs.attrs['excluded']}" if configs.attrs["excluded"] else "")


# Pivots ---------------------------------------------------------------------------------------

def grid_title(grid: Grid, configs: pd.DataFrame, typical: int) -> str:
    """"Test Error (median of 3 runs) — ResNet-preact-20, LR schedule: cosine"."""
    parts = ([grid.label] if grid.label else []) + [f"{header(k)}: {display_value(k, v)}" for k, v in grid.fixed]
    head = metric_header(configs.attrs["metric"], configs.attrs["agg"], typical)
    return f"{head} — {', '.join(parts)}" if parts else head


def pivot_runs(grids: Sequence[Grid]) -> int:
    return typical_runs([int(cell["runs"]) for grid in grids for cell in grid.cells.values()])


def display_grid(
    grid: Grid, configs: pd.DataFrame, row_key: str, col_key: str, typical: int, digits: int
) -> tuple[list[str], list[list[str]], list[bool]]:
    metric, agg = configs.attrs["metric"], configs.attrs["agg"]
    headers = [f"{header(row_key)} \\ {header(col_key)}", *(display_value(col_key, v) for v in grid.col_values)]
    rows = []
    for rv in grid.row_values:
        row = [display_value(row_key, rv)]
        for cv in grid.col_values:
            cell = grid.cells.get((rv, cv))
            row.append("-" if cell is None else metric_cell(cell, metric, agg, typical, digits))
        rows.append(row)
    return headers, rows, [all(_is_number(v) for v in grid.row_values)] + [True] * len(grid.col_values)


def render_pivot(
    configs: pd.DataFrame, grids: Sequence[Grid], row_key: str, col_key: str, fmt: str = "markdown", digits: int = 2
) -> str:
    typical = pivot_runs(grids)
    metric, agg = configs.attrs["metric"], configs.attrs["agg"]
    if fmt == "csv":
        return _pivot_csv(configs, grids, row_key, col_key)
    if fmt == "json":
        document = {
            **_json_head(configs),
            "pivot": {"rows": row_key, "columns": col_key},
            "runs_per_cell": typical,
            "grids": [
                {
                    "title": grid_title(grid, configs, typical),
                    "model": grid.label,
                    "fixed": dict(grid.fixed),
                    "row_values": grid.row_values,
                    "column_values": grid.col_values,
                    "cells": [
                        [None if (cell := grid.cells.get((rv, cv))) is None
                         else {**_config_json(cell, configs.attrs["keys"], metric),
                               "cell": metric_cell(cell, metric, agg, typical, digits)}
                         for cv in grid.col_values]
                        for rv in grid.row_values
                    ],
                }
                for grid in grids
            ],
            "excluded": _json_excluded(configs),
        }
        return json.dumps(document, indent=2, ensure_ascii=False)
    blocks = []
    for grid in grids:
        title = grid_title(grid, configs, typical)
        headers, rows, numeric = display_grid(grid, configs, row_key, col_key, typical, digits)
        if fmt == "latex":
            blocks.append(f"% {title}\n" + latex(headers, rows, numeric))
        else:
            blocks.append(f"{title}\n\n" + markdown(headers, rows, numeric))
    text = "\n\n".join(blocks)
    if fmt == "markdown" and configs.attrs["excluded"]:
        text += f"\n\n{configs.attrs['excluded']}"
    return text


def _pivot_csv(configs: pd.DataFrame, grids: Sequence[Grid], row_key: str, col_key: str) -> str:
    """One csv for all grids: the keys that pick the grid, the row value, one column per column value."""
    metric = configs.attrs["metric"]
    fixed_keys = [k for k, _ in grids[0].fixed] if grids else []
    col_values = sorted({v for grid in grids for v in grid.col_values}, key=natural_key)
    rows: list[list[str]] = [["Model", *(header(k) for k in fixed_keys), header(row_key),
                              *(f"{header(col_key)}={v}" for v in col_values)]]
    for grid in grids:
        fixed = dict(grid.fixed)
        for rv in grid.row_values:
            cells = [grid.cells.get((rv, cv)) for cv in col_values]
            names = sorted({c["label"] for c in cells if c is not None})
            rows.append([" / ".join(names), *(fixed[k] for k in fixed_keys), rv,
                         *("" if c is None else _number(c[metric]) for c in cells)])
    return csv_text(rows)
