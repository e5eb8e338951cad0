"""Matplotlib figures: learning curves, a metric against a param, heatmaps of pivots.

Figures are built with `matplotlib.figure.Figure` (no pyplot, no global backend), so notebooks
can show the returned figure and scripts write PNG/SVG/PDF by the file's extension."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.aggregate import Grid
from analysis.errors import AnalysisError
from analysis.formats import grid_title, metric_header, pivot_runs
from analysis.labels import display_value, header, label_without, metric_axis, metric_name
from analysis.runs import natural_key, open_client

EXTENSIONS = (".png", ".svg", ".pdf")
_AGG_WORDS = {"median": "median", "mean": "mean", "mean_std": "mean", "min": "min", "max": "max"}


def check_out(out: str | Path) -> Path:
    path = Path(out)
    if path.suffix.lower() not in EXTENSIONS:
        raise AnalysisError(f"--out: the file name must end in {', '.join(EXTENSIONS)} (got {str(out)!r})")
    return path


def save(fig, out: str | Path) -> Path:  # noqa: ANN001
    path = check_out(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def fetch_histories(
    tracking_uri: str, run_ids: Sequence[str], metric: str = "test_error", progress: bool = True
) -> pd.DataFrame:
    """Per-epoch values of `metric` for the runs: columns run_id, step, value. One call per run
    (MLflow has no bulk history call), in threads for remote stores."""
    client = open_client(tracking_uri)
    total, done = len(run_ids), 0
    tty = sys.stderr.isatty()

    def fetch(run_id: str) -> list[tuple[str, int, float]]:
        return [(run_id, m.step, m.value) for m in client.get_metric_history(run_id, metric)]

    if progress:
        print(f"analysis: fetching {metric} histories of {total} runs", file=sys.stderr, flush=True)
    rows: list[tuple[str, int, float]] = []
    workers = 1 if tracking_uri.startswith(("sqlite:", "file:", "/")) else 8
    with ThreadPoolExecutor(workers) as pool:
        for part in pool.map(fetch, run_ids):
            rows.extend(part)
            done += 1
            if progress and tty:
                print(f"\ranalysis: {done}/{total} runs", end="", file=sys.stderr, flush=True)
    if progress and tty:
        print(file=sys.stderr)
    return pd.DataFrame(rows, columns=["run_id", "step", "value"])


# Okabe & Ito's palette (colour-blind safe: no red-green pair), darkest first; yellow last, it is
# faint on white. Beyond 8 lines the colours repeat with another line style.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#F0E442")
LINE_STYLES = ("-", "--", ":", "-.")
HEATMAP_CMAP = "cividis"  # perceptually uniform and colour-blind safe (blue = lower, yellow = higher)
BAND_LIMIT = 3  # more configurations than this: min-max bands only when asked (`--bands`)


def line_style(index: int) -> dict[str, str]:
    """The index-th line's colour (Okabe-Ito) and line style."""
    return {"color": OKABE_ITO[index % len(OKABE_ITO)],
            "linestyle": LINE_STYLES[index // len(OKABE_ITO) % len(LINE_STYLES)]}


def config_name(config: pd.Series, shown: Sequence[str], runs: bool = True, label: str | None = None) -> str:
    """Legend entry: "ResNet-preact-20, Batch size 128, Initial LR 0.1 (3 runs)" (`label`: instead
    of the configuration's own; "" for none)."""
    parts = [config["label"] if label is None else label,
             *(f"{header(k)} {display_value(k, config[k])}" for k in shown)]
    text = ", ".join(p for p in parts if p)
    if runs:
        count = int(config["runs"])
        text += f" ({count} run{'s' if count != 1 else ''})"
    return text


def context(configs: pd.DataFrame) -> str:
    """What the figure shows data of: "CIFAR-10 · experiment lr-study"."""
    datasets = [display_value("data", d) for d in configs.attrs.get("datasets", [])]
    experiments = configs.attrs.get("experiments", [])
    parts = [", ".join(datasets) or "dataset not logged"]
    if experiments:
        parts.append(f"experiment{'s' if len(experiments) > 1 else ''} {', '.join(experiments)}")
    return " · ".join(parts)


def _figure(width: float = 7.0, height: float = 4.5):  # noqa: ANN202
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _common(names: Sequence[str]) -> str:
    """The label every line has: said once, in the title."""
    found = set(names)
    return found.pop() if len(found) == 1 else ""


def _legend(ax, count: int) -> None:  # noqa: ANN001
    if count > 8:
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    elif count:
        ax.legend(fontsize="small")


def _title(ax, configs: pd.DataFrame, default: str, title: str | None, note: str) -> None:  # noqa: ANN001
    """The user's title or the default, then the data's context and how to read the figure."""
    ax.set_title(f"{title or default}\n{context(configs)} ({note})", fontsize="medium")


def plot_curves(
    configs: pd.DataFrame, history: pd.DataFrame, out: str | Path | None = None, title: str | None = None,
    bands: bool | None = None,
):  # noqa: ANN201
    """Metric vs epoch: the median over each configuration's runs; min-max bands (faint) by
    default for up to `BAND_LIMIT` configurations, else only when `bands` is True."""
    metric = configs.attrs["metric"]
    shown = configs.attrs["columns"]
    many = len(configs) > BAND_LIMIT
    bands = not many if bands is None else bands
    fig = _figure()
    ax = fig.add_subplot()
    by_run = history.pivot_table(index="step", columns="run_id", values="value", aggfunc="last")
    common = _common(list(configs["label"]))
    lines = 0
    for _, config in configs.iterrows():
        ids = [r for r in config["run_ids"] if r in by_run.columns]
        if not ids:
            continue
        curves = by_run[ids].dropna(how="all")
        epochs = curves.index.to_numpy()
        style = line_style(lines)
        ax.plot(epochs, curves.median(axis=1), label=config_name(config, shown, label="" if common else None),
                linewidth=1.5, **style)
        if bands and len(ids) > 1:
            ax.fill_between(epochs, curves.min(axis=1), curves.max(axis=1), color=style["color"],
                            alpha=0.1 if many else 0.2, linewidth=0)
        lines += 1
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Epoch")
    ax.set_ylabel(metric_axis(metric))
    note = "line: median over runs, band: min–max" if bands else "line: median over runs"
    _title(ax, configs, f"{metric_name(metric)} by epoch{' — ' + common if common else ''}", title, note)
    ax.grid(True, alpha=0.3)
    _legend(ax, lines)
    if out is not None:
        save(fig, out)
    return fig


def _numeric(values: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def check_varies(configs: pd.DataFrame, x_key: str) -> None:
    """`--x` must take several values among the configurations to be an axis."""
    if x_key not in configs.attrs["keys"]:
        raise AnalysisError(f"--x: {x_key!r} is not a key of the configurations ({', '.join(configs.attrs['keys'])})")
    values = sorted(set(configs[x_key]), key=natural_key)
    if len(values) < 2:
        varying = [k for k in configs.attrs["keys"] if configs[k].nunique() > 1]
        raise AnalysisError(f"--x: {x_key} does not vary among the selected runs (its values: "
                            f"{', '.join(display_value(x_key, v) for v in values) or 'none'}; keys that vary: "
                            f"{', '.join(varying) or 'none'})")


def plot_param(
    configs: pd.DataFrame, x_key: str, out: str | Path | None = None, title: str | None = None
):  # noqa: ANN201
    """The aggregated metric against one param, one line per combination of the other keys,
    labelled by what stays the same along it; error bars span min-max over the runs."""
    check_varies(configs, x_key)
    metric, agg = configs.attrs["metric"], configs.attrs["agg"]
    others = [k for k in configs.attrs["keys"] if k != x_key]
    shown = [k for k in others if k in configs.attrs["columns"]]
    xs_all = sorted(set(configs[x_key]), key=natural_key)
    numbers = _numeric(xs_all)
    groups = configs.groupby(others, sort=False) if others else [((), configs)]
    ordered = [members.iloc[sorted(range(len(members)), key=lambda i: natural_key(members[x_key].iloc[i]))]
               for _, members in groups]
    names = [" / ".join(sorted({label_without(p, x_key) for p in members["params"]})) for members in ordered]
    common = _common(names)
    fig = _figure()
    ax = fig.add_subplot()
    lines = 0
    for index, (members, name) in enumerate(zip(ordered, names)):
        xs = [float(v) for v in members[x_key]] if numbers else [xs_all.index(v) for v in members[x_key]]
        ys = members[metric].to_numpy()
        err = np.vstack([ys - members[f"{metric}_min"].to_numpy(), members[f"{metric}_max"].to_numpy() - ys])
        text = config_name(members.iloc[0], shown, runs=False, label="" if common else name) or None
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, linewidth=1.5, label=text, **line_style(index))
        lines += text is not None
    if numbers:
        positive = [v for v in numbers if v > 0]
        if len(positive) == len(numbers) and max(numbers) / min(numbers) >= 8:
            base = 2 if all(math.log2(v).is_integer() for v in numbers) else 10
            ax.set_xscale("log", base=base)
        ax.set_xticks(numbers, [display_value(x_key, v) for v in xs_all])
        ax.minorticks_off()
    else:
        ax.set_xticks(range(len(xs_all)), [display_value(x_key, v) for v in xs_all])
    ax.set_xlabel(header(x_key))
    ax.set_ylabel(f"{metric_axis(metric)}, {_AGG_WORDS[agg]} over runs")
    _title(ax, configs, f"{metric_name(metric)} vs {header(x_key)}{' — ' + common if common else ''}", title,
           "bars: min–max over runs")
    ax.grid(True, alpha=0.3)
    _legend(ax, lines)
    if out is not None:
        save(fig, out)
    return fig


def plot_heatmap(
    configs: pd.DataFrame, grids: Sequence[Grid], row_key: str, col_key: str, out: str | Path | None = None,
    title: str | None = None, digits: int = 2,
):  # noqa: ANN201
    """One heatmap per pivot grid, cells annotated with the aggregated metric (cividis: darker = lower)."""
    metric = configs.attrs["metric"]
    typical = pivot_runs(grids)
    matrices = [
        np.array([[grid.cells[(rv, cv)][metric] if (rv, cv) in grid.cells else np.nan for cv in grid.col_values]
                  for rv in grid.row_values], dtype=float)
        for grid in grids
    ]
    finite = np.concatenate([m[np.isfinite(m)] for m in matrices]) if matrices else np.array([])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    ncols = min(len(grids), 3) or 1
    nrows = math.ceil(len(grids) / ncols) or 1
    widest = max((len(g.col_values) for g in grids), default=1)
    tallest = max((len(g.row_values) for g in grids), default=1)
    fig = _figure(ncols * max(4.0, 1.1 * widest + 2), nrows * max(3.0, 0.6 * tallest + 2))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    image = None
    for ax, grid, matrix in zip(axes, grids, matrices):
        image = ax.imshow(matrix, cmap=HEATMAP_CMAP, vmin=vmin, vmax=vmax, aspect="auto")
        colors = image.to_rgba(np.nan_to_num(matrix, nan=vmin))
        for i, rv in enumerate(grid.row_values):
            for j, cv in enumerate(grid.col_values):
                cell = grid.cells.get((rv, cv))
                text = "-" if cell is None else f"{cell[metric]:.{digits}f}"
                if cell is not None and int(cell["runs"]) != typical:
                    text += f"\n({int(cell['runs'])} run{'s' if int(cell['runs']) != 1 else ''})"
                r, g, b, _ = colors[i, j]
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(j, i, text, ha="center", va="center", fontsize="small", color="white" if dark else "black")
        ax.set_xticks(range(len(grid.col_values)), [display_value(col_key, v) for v in grid.col_values])
        ax.set_yticks(range(len(grid.row_values)), [display_value(row_key, v) for v in grid.row_values])
        ax.set_xlabel(header(col_key))
        ax.set_ylabel(header(row_key))
        if len(grids) > 1 or grid.label or grid.fixed:
            ax.set_title(grid_title(grid, configs, typical).split(" — ", 1)[-1], fontsize="medium")
    for ax in axes[len(grids):]:
        ax.set_visible(False)
    fig.suptitle(f"{title or metric_header(metric, configs.attrs['agg'], typical)}\n{context(configs)}")
    if image is not None:
        fig.colorbar(image, ax=list(axes[: len(grids)]), label=metric_axis(metric), shrink=0.9)
    if out is not None:
        save(fig, out)
    return fig
