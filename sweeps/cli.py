"""`python -m sweeps list|show|check|run|table|report`: the seeds' studies as runnable sweeps, and
cifarzoo's results beside the numbers the seeds published."""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

from cifarzoo.cli import STORE_WORDS, CliError, add_store_args, take_store_words
from cifarzoo.paths import REPO_DIR
from sweeps.study import StudyError, load, names

EPILOG = """examples:
  python -m sweeps list
  python -m sweeps show h000_preact20_aug_fashion_mnist         # its run.py commands and number of runs
  python -m sweeps check                             # compose and validate every job of every study
  python -m sweeps run h000_preact20_aug_fashion_mnist hydra/launcher=slurm hydra.launcher.partition=gpu
  python -m sweeps run h000_preact20_aug_fashion_mnist +plan=true   # what would run, resume or be skipped
  python -m sweeps table h000_mnist                  # cifarzoo's numbers beside the published ones, verdicts
  python -m sweeps table h000_mnist tracking.uri=sqlite:///other.db --format csv   # or --tracking-uri URI
  python -m sweeps check h000_mnist model.depth=21   # the study's jobs with an extra override
  python -m sweeps report --out REPRODUCTION.md      # every study, from the MLflow store"""

TABLE_HELP = """Per row of the study: cifarzoo's statistic of the kind the source printed (median, mean, or its
best run for a best of N), the number the source printed, the difference, runs finished / runs the study
makes, median, mean, s.d., a 95% interval (t for a mean, bootstrap for a median or a best; n >= 3), the
runs' environment, and a verdict (sweeps/verdict.py): reproduced (inside the interval; with n < 3
within the study's tolerance: 0.2 pp on MNIST-like data, 0.3 pp otherwise), differs, inconclusive
(n < 3 outside the tolerance, or an interval wider than 2 x tolerance), not run, no number, unknown
network. --agg adds a column of that aggregate. tracking.uri= / tracking.experiment= (and overrides
the study was run with, e.g. train.epochs=10 for a smoke run) may follow the study's name."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the studies, a line each")
    show = sub.add_parser("show", help="a study's run.py commands")
    show.add_argument("study")
    check = sub.add_parser("check", help="compose and validate every job (no data, no training); exit 2 if one "
                                          "would not start")
    check.add_argument("studies", nargs="*", metavar="STUDY|KEY=VALUE",
                       help="studies (default: all), then Hydra overrides added to each job (as `run` takes them)")
    run = sub.add_parser("run", help="run a study's multiruns one after another; extra Hydra overrides follow")
    run.add_argument("study")
    run.add_argument("overrides", nargs=argparse.REMAINDER, help="e.g. hydra/launcher=slurm seed=1")
    table = sub.add_parser("table", help="cifarzoo's numbers beside the published ones, with verdicts (from MLflow)",
                           description=TABLE_HELP)
    table.add_argument("study")
    table.add_argument("options", nargs=argparse.REMAINDER,
                       help="tracking.uri=... tracking.experiment=... (or overrides the study was run with), "
                            "--format markdown|csv|latex|json, --digits N, --agg median|..., --metric NAME, --out FILE, "
                            "--no-cache")
    report = sub.add_parser("report", help="every study's table in one markdown file (from MLflow; nothing is trained)")
    report.add_argument("--out", default="REPRODUCTION.md", help="default: %(default)s")
    report.add_argument("--no-cache", dest="cache", action="store_false", help="read without the run cache")
    report.add_argument("--tracking-uri", default=None, metavar="URI", help="the MLflow store, also tracking.uri=URI "
                        "(default: the training default)")
    report.add_argument("options", nargs="*", metavar="tracking.uri=...", help="the MLflow store (default: the training default)")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StudyError as error:
        print(f"sweeps: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `python -m sweeps show x | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python flushes stdout at exit)
        return 0


def _list(args: argparse.Namespace) -> int:
    for name in names():
        study = load(name)
        print(f"{name:32s} {len(study.jobs()):4d} runs  {study.title}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from sweeps.table import published_markdown

    study = load(args.study)
    print(f"# {study.title}\n# source: {study.source}\n# table: python -m sweeps table {args.study}")
    if study.notes:
        print("\n".join(f"# {line}" for line in study.notes.strip().splitlines()))
    for overrides in study.multiruns():
        print("python run.py -m " + " ".join(_quote(o) for o in overrides))
    print(f"# {len(study.jobs())} runs")
    if study.published is not None:
        print(f"\n# the source's numbers ({study.metric} compares with them):\n" + published_markdown(study))
    return 0


def _check(args: argparse.Namespace) -> int:
    from sweeps.check import check_study
    from sweeps.published import check_published

    studies = [w for w in args.studies if "=" not in w and not w.startswith(("+", "~"))]
    extra = [w for w in args.studies if w not in studies]  # `model.depth=21` is an override, not a study
    failed = 0
    for name in studies or names():
        study = load(name)
        with_extra = dataclasses.replace(study, grids=tuple((*g, *extra) for g in study.grids))
        problems = check_published(study) + check_study(with_extra)
        failed += bool(problems)
        status = "ok" if not problems else f"{len(problems)} problems"
        print(f"{name:32s} {len(study.jobs()):4d} runs  {status}", flush=True)
        for line in problems:
            print(f"  {line}", flush=True)
    return 2 if failed else 0  # a job that would not start is bad input, as for `run` and run.py -m


def _run_to_its_end(command: list[str]) -> int:
    """run.py's exit code. Ctrl-C reaches run.py too (one process group): it checkpoints, prints its
    sweep's summary and exits 130, so this waits for it (subprocess.run would SIGKILL it 0.25 s
    after the Ctrl-C, in the middle of its checkpoint)."""
    child = subprocess.Popen(command, cwd=REPO_DIR)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue


def _run(args: argparse.Namespace) -> int:
    """`check` first (with the extra overrides): a study with a job that would not start runs nothing."""
    from sweeps.check import check_study

    study = load(args.study)
    extra = [o for o in args.overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/", "-"))]
    if not any(o.lstrip("+") in ("plan=true", "plan=True") for o in extra):  # a plan reports invalid jobs itself
        problems = check_study(dataclasses.replace(study, grids=tuple((*g, *extra) for g in study.grids)))
        for line in problems:
            print(f"sweeps: error: {line}", file=sys.stderr, flush=True)
        if problems:
            print(f"sweeps: error: {args.study}: {len(problems)} problem(s) found by check; nothing was run",
                  file=sys.stderr, flush=True)
            return 2
    from cifarzoo.exits import worst

    status = 0
    for overrides in study.multiruns():
        command = [sys.executable, str(REPO_DIR / "run.py"), "-m", *overrides, *args.overrides]
        print("sweeps: " + " ".join(_quote(c) for c in command[1:]), flush=True)
        status = worst(status, _run_to_its_end(command))
        if status > 128:  # stopped by a signal (Ctrl-C): not the next multirun
            break
    return status


def _table(args: argparse.Namespace) -> int:
    from analysis.cli import write_output
    from sweeps.report import reproduction
    from sweeps.table import footer, render, summary

    study = load(args.study)
    options, overrides = _table_options(args.options)
    where = _tracking(overrides)
    with _store_errors():
        rep = reproduction(study, where["uri"], where["experiment"], overrides, options.agg, options.metric,
                           cache=options.cache)
    write_output(render(rep, options.format, options.digits), options.out, "sweeps")
    if options.format in ("csv", "latex"):  # the file stays a table; what it is made of goes to stderr
        print("\n".join([summary(rep), *footer(rep)]), file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from analysis.cli import write_output
    from sweeps.report import report

    options, overrides = _table_options(args.options + ([f"tracking.uri={args.tracking_uri}"] if args.tracking_uri else []))
    unknown = [o for o in overrides if not o.startswith("tracking.uri=")]
    if unknown or vars(options) != vars(_table_options([])[0]):
        raise StudyError(f"report: takes --out, --no-cache and tracking.uri=... only "
                         f"(got {' '.join(unknown or args.options)})")
    with _store_errors():
        text = report(_tracking(overrides)["uri"], cache=args.cache)
    write_output(text, args.out, "sweeps")
    return 0


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """A missing store or a bad metric: the one-line error of the analysis package, as sweeps' own."""
    from analysis.errors import AnalysisError

    try:
        yield
    except AnalysisError as error:
        raise StudyError(str(error).replace("--tracking-uri", "tracking.uri")) from None


def _table_options(words: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """`--format csv tracking.uri=... --digits 3` -> the options, and the key=value overrides."""
    from analysis.aggregate import AGGS
    from analysis.formats import FORMATS

    parser = argparse.ArgumentParser(prog="python -m sweeps table STUDY", add_help=False)
    parser.add_argument("--format", choices=FORMATS, default="markdown")
    parser.add_argument("--digits", type=int, default=2)
    parser.add_argument("--agg", choices=AGGS, default="median")
    parser.add_argument("--metric", default=None, help="default: the study's metric (test_error unless it says)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-cache", dest="cache", action="store_false", help="read without the run cache")
    add_store_args(parser, experiment="the study's")
    options, rest = parser.parse_known_args(words)
    bad = [w for w in rest if w.startswith("-") or "=" not in w]
    if bad:
        raise StudyError(f"table: unknown argument {bad[0]!r} (options: --format --digits --agg --metric --out "
                         "--no-cache --tracking-uri --experiment; overrides: tracking.uri=... tracking.experiment=...)")
    flags = argparse.Namespace(tracking_uri=options.tracking_uri, experiment=options.experiment)
    try:  # the flags as the words they stand for (a flag and a word naming two stores: bad input)
        rest = take_store_words(flags, rest)
    except CliError as error:
        raise StudyError(str(error)) from None
    rest += [f"{key}={getattr(flags, attr)}" for key, attr in STORE_WORDS.items() if getattr(flags, attr)]
    del options.tracking_uri, options.experiment
    return options, rest


def _tracking(overrides: list[str]) -> dict[str, str | None]:
    from cifarzoo.paths import default_tracking_uri

    given = {o.split("=", 1)[0].lstrip("+"): o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("tracking.")}
    return {"uri": given.get("tracking.uri") or default_tracking_uri(), "experiment": given.get("tracking.experiment")}


def _quote(text: str) -> str:
    return f"'{text}'" if any(c in text for c in " []()*?$") else text


COMMANDS = {"list": _list, "show": _show, "check": _check, "run": _run, "table": _table, "report": _report}
