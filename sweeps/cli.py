"""`python -m sweeps list|show|check|run`: the seeds' studies as runnable sweeps."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from cifarzoo.paths import REPO_DIR
from sweeps.study import StudyError, load, names

EPILOG = """examples:
  python -m sweeps list
  python -m sweeps show h000_preact20_aug_fashion_mnist         # its run.py commands and number of runs
  python -m sweeps check                             # compose and validate every job of every study
  python -m sweeps run h000_preact20_aug_fashion_mnist hydra/launcher=slurm hydra.launcher.partition=gpu
  python -m sweeps run h000_preact20_aug_fashion_mnist +plan=true   # what would run, resume or be skipped
  python -m sweeps table h000_preact20_aug_fashion_mnist   # = python -m analysis table --experiment <its experiment>"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the studies, a line each")
    show = sub.add_parser("show", help="a study's run.py commands")
    show.add_argument("study")
    check = sub.add_parser("check", help="compose and validate every job (no data, no training)")
    check.add_argument("studies", nargs="*", help="default: all")
    run = sub.add_parser("run", help="run a study's multiruns one after another; extra Hydra overrides follow")
    run.add_argument("study")
    run.add_argument("overrides", nargs=argparse.REMAINDER, help="e.g. hydra/launcher=slurm seed=1")
    table = sub.add_parser("table", help="the study's table from its MLflow runs (python -m analysis table options follow)")
    table.add_argument("study")
    table.add_argument("options", nargs=argparse.REMAINDER, help="e.g. --agg mean_std --format latex")
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
    study = load(args.study)
    print(f"# {study.title}\n# source: {study.source}\n# table: python -m analysis table --experiment {study.experiment}")
    if study.notes:
        print("\n".join(f"# {line}" for line in study.notes.strip().splitlines()))
    for overrides in study.multiruns():
        print("python run.py -m " + " ".join(_quote(o) for o in overrides))
    print(f"# {len(study.jobs())} runs")
    return 0


def _check(args: argparse.Namespace) -> int:
    from sweeps.check import check_study
    from sweeps.published import check_published

    failed = 0
    for name in args.studies or names():
        study = load(name)
        problems = check_published(study) + check_study(study)
        failed += bool(problems)
        status = "ok" if not problems else f"{len(problems)} problems"
        print(f"{name:32s} {len(study.jobs()):4d} runs  {status}", flush=True)
        for line in problems:
            print(f"  {line}", flush=True)
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    study = load(args.study)
    status = 0
    for overrides in study.multiruns():
        command = [sys.executable, str(REPO_DIR / "run.py"), "-m", *overrides, *args.overrides]
        print("sweeps: " + " ".join(_quote(c) for c in command[1:]), flush=True)
        status = max(status, subprocess.run(command, cwd=REPO_DIR).returncode)
    return status


def _table(args: argparse.Namespace) -> int:
    from analysis.cli import main as analysis_main

    return analysis_main(["table", "--experiment", load(args.study).experiment, *args.options])


def _quote(text: str) -> str:
    return f"'{text}'" if any(c in text for c in " []()*?$") else text


COMMANDS = {"list": _list, "show": _show, "check": _check, "run": _run, "table": _table}
