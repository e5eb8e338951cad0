"""`python -m analysis table|plot`: result tables and figures from the MLflow runs."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from analysis.aggregate import AGGS, aggregate, pivot
from analysis.errors import AnalysisError
from analysis.formats import FORMATS, render_pivot, render_table
from analysis.runs import load_runs, param_name, resolve_key, unvouched
from cifarzoo.paths import DEFAULT_EXPERIMENT

EPILOG = """examples:
  python -m analysis table --experiment lr-study
  python -m analysis table --experiment 'zoo-*' --where data=cifar10 --agg mean_std --format latex
  python -m analysis table --experiment lr-study --pivot train.batch_size optim.lr
  python -m analysis plot curves --experiment demo --out curves.png
  python -m analysis plot param --experiment lr-study --x train.batch_size --out error_vs_batch.svg
  python -m analysis plot heatmap --experiment lr-study --pivot train.batch_size optim.lr --out grid.png"""


class Parser(argparse.ArgumentParser):
    """Bad arguments: one line `analysis: error: ...`, exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"analysis: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _selection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("which runs")
    group.add_argument("--tracking-uri", default=None,
                       help="MLflow store (default: the training default, $MLFLOW_TRACKING_URI or outputs/mlflow.db)")
    group.add_argument("--experiment", action="append", default=None, metavar="NAME",
                       help=f"experiment name or glob, repeatable (default: {DEFAULT_EXPERIMENT})")
    group.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                       help="keep runs whose param KEY equals VALUE (numbers compare as numbers; globs allowed), "
                            "repeatable")
    group.add_argument("--no-cache", dest="cache", action="store_false",
                       help="read a sqlite store without the run cache (neither read nor written)")
    group.add_argument("--drop-cache", action="store_true",
                       help="delete this store's run cache first (it is rebuilt by this read unless --no-cache)")
    group = parser.add_argument_group("rows and values")
    group.add_argument("--rows", action="append", default=None, metavar="KEY,...",
                       help="params that define a configuration (default: the params that vary, except seed "
                            "and bookkeeping)")
    group.add_argument("--agg", choices=AGGS, default="median", help="over the runs of a configuration "
                       "(default: median; mean_std shows 4.03 ± 0.12)")
    group.add_argument("--metric", default="test_error", help="last-epoch metric to aggregate (default: test_error)")


def _wrap(text: str) -> str:
    """A description for RawDescriptionHelpFormatter (which keeps the examples' line breaks)."""
    return textwrap.fill(text, 88)


def build_parser() -> Parser:
    parser = Parser(prog="python -m analysis", description=__doc__, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{table,plot}", parser_class=Parser)

    table = commands.add_parser("table", help="a table of configurations (or pivot grids)",
                                description="Aggregate the last-epoch metric per configuration over seeds.")
    _selection(table)
    table.add_argument("--pivot", nargs=2, metavar=("ROWKEY", "COLKEY"), help="grids of ROWKEY x COLKEY")
    table.add_argument("--format", choices=FORMATS, default="markdown")
    table.add_argument("--digits", type=int, default=2, help="decimals of the metric (default: 2)")
    table.add_argument("--out", metavar="FILE", help="write here instead of stdout")

    plot = commands.add_parser("plot", help="learning curves, a metric vs a param, or a pivot heatmap",
                               description="Figures from the runs (PNG, SVG or PDF); "
                                           "`python -m analysis plot KIND --help` for each kind's options.")
    kinds = plot.add_subparsers(dest="kind", required=True, metavar="{curves,param,heatmap}", parser_class=Parser)
    curves = kinds.add_parser(
        "curves", help="metric vs epoch per configuration", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap("The metric's per-epoch history, one line per configuration: the median over its runs, "
                    "with a faint min-max band (by default only up to 3 configurations: with more, bands "
                    "hide each other)."),
        epilog="example:\n  python -m analysis plot curves --experiment demo --out curves.png")
    curves.add_argument("--bands", action=argparse.BooleanOptionalAction, default=None,
                        help="draw the min-max bands over each configuration's runs (default: with at most 3 "
                             "configurations)")
    param = kinds.add_parser(
        "param", help="aggregated metric vs one param", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap("The aggregated last-epoch metric against --x, one line per combination of the other "
                    "varying keys, labelled by what stays the same along it; bars span min-max over the runs."),
        epilog="example:\n  python -m analysis plot param --experiment lr-study --x train.batch_size "
               "--out error_vs_batch.svg")
    param.add_argument("--x", metavar="KEY", help="the x axis param, one that varies (e.g. train.batch_size)")
    param.add_argument("--by", action="append", default=[], metavar="KEY",
                       help="also separate lines by KEY (lines already split by every other varying key)")
    heatmap = kinds.add_parser(
        "heatmap", help="pivot grid of the aggregated metric", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap("One heatmap per combination of the other varying keys, cells = aggregated metric."),
        epilog="example:\n  python -m analysis plot heatmap --experiment lr-study --pivot train.batch_size optim.lr "
               "--out grid.png")
    heatmap.add_argument("--pivot", nargs=2, metavar=("ROWKEY", "COLKEY"), help="rows x columns")
    for kind in (curves, param, heatmap):
        _selection(kind)
        kind.add_argument("--title", help="the figure's title (default: says what is plotted); the dataset and "
                                          "experiment follow it")
        kind.add_argument("--out", metavar="FILE.png|.svg|.pdf", help=f"default: {kind.prog.split()[-1]}.png")
    curves.set_defaults(x=None, by=[], pivot=None)
    param.set_defaults(bands=None, pivot=None)
    heatmap.set_defaults(bands=None, x=None, by=[])
    return parser


def _rows(args: argparse.Namespace) -> list[str] | None:
    if not args.rows:
        return None
    keys = [k.strip() for item in args.rows for k in item.split(",") if k.strip()]
    if not keys:
        raise AnalysisError("--rows: expected KEY,...")
    return keys


def write_output(text: str, out: str | None, prog: str = "analysis") -> None:
    """The text on stdout, or into `out` (its folder created) with a line on stderr saying so."""
    if out is None:
        print(text)
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")
    print(f"{prog}: wrote {path}", file=sys.stderr)


def _keys(runs, keys: Sequence[str], option: str) -> list[str]:  # noqa: ANN001
    return [param_name(resolve_key(runs, k, option)) for k in keys]


def run(args: argparse.Namespace) -> None:
    from cifarzoo.paths import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    if args.drop_cache:
        from analysis.runcache import drop_cache

        for path in drop_cache(uri):
            print(f"analysis: deleted the run cache {path}", file=sys.stderr)
    runs = load_runs(uri, args.experiment or [DEFAULT_EXPERIMENT], args.where, progress=True, cache=args.cache)
    if note := unvouched(runs):
        print(note, file=sys.stderr)
    if runs.empty:
        raise AnalysisError(f"no runs in experiment(s) {', '.join(runs.attrs['experiments'])} at {uri}", status=1)
    if f"metrics.{args.metric}" not in runs.columns:
        logged = ", ".join(sorted(c[len("metrics."):] for c in runs.columns if c.startswith("metrics."))) or "none"
        raise AnalysisError(f"--metric: no selected run logged {args.metric!r} (metrics: {logged})")
    rows = _rows(args)
    axes = _keys(runs, args.pivot, "--pivot") if args.pivot else []
    if args.command == "plot":
        if args.kind == "param":
            if not args.x:
                raise AnalysisError("plot param: needs --x KEY")
            axes = _keys(runs, [args.x, *args.by], "--x")
        elif args.kind == "heatmap" and not args.pivot:
            raise AnalysisError("plot heatmap: needs --pivot ROWKEY COLKEY")
        if args.out:
            from analysis.plots import check_out

            check_out(args.out)
    configs = aggregate(runs, rows=rows, agg=args.agg, metric=args.metric, include=axes)
    excluded = configs.attrs["excluded"]
    if configs.empty:
        detail = f" ({excluded})" if excluded else ""
        raise AnalysisError(f"no finished runs with {args.metric} to aggregate{detail}", status=1)
    if args.command == "table":
        grids = pivot(configs, *axes) if args.pivot else None
        text = (render_pivot(configs, grids, *axes, fmt=args.format, digits=args.digits) if grids is not None
                else render_table(configs, fmt=args.format, digits=args.digits))
        write_output(text, args.out)
        if excluded and (args.format in ("csv", "latex") or args.out):
            print(excluded, file=sys.stderr)
        return

    from analysis import plots

    out = args.out or f"{args.kind}.png"
    if args.kind == "curves":
        run_ids = [r for ids in configs["run_ids"] for r in ids]
        history = plots.fetch_histories(uri, run_ids, args.metric)
        plots.plot_curves(configs, history, out, title=args.title, bands=args.bands)
    elif args.kind == "param":
        plots.plot_param(configs, axes[0], out, title=args.title)
    else:
        plots.plot_heatmap(configs, pivot(configs, *axes), *axes, out, title=args.title)
    print(f"analysis: wrote {out}" + (f"; {excluded}" if excluded else ""), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    from cifarzoo.cli import words_as_flags

    args = build_parser().parse_args(words_as_flags(sys.argv[1:] if argv is None else argv))
    try:
        run(args)
    except AnalysisError as error:
        print(f"analysis: error: {error}", file=sys.stderr)
        return error.status
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (no flush error at exit)
    return 0
