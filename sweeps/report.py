"""`python -m sweeps report`: every study's reproduction table in one markdown file, from the MLflow
store alone (nothing is trained): the verdict counts per seed document, an overview per study, then
per study its rows run, its verdicts, the table and its deviations from the source (the study's notes)."""

from __future__ import annotations

import re

import pandas as pd

from analysis.formats import markdown
from analysis.runs import BASE, active_experiments, load_runs
from sweeps.study import Study, load, names
from sweeps.table import Reproduction, footer, reproduce, summary, table_markdown
from sweeps.verdict import VERDICTS


_EMPTY = pd.DataFrame()


def experiments(uri: str) -> set[str]:
    """The store's active experiments (a missing sqlite store is an error, never created)."""
    return set(active_experiments(uri))


def reproduction(study: Study, uri: str, experiment: str | None = None, extra: list[str] = (),
                 agg: str = "median", metric: str | None = None, known: set[str] | None = None,
                 runs: pd.DataFrame | None = None, cache: bool = True) -> Reproduction:
    """The study's table from the store; rows `not run` when the store has no such experiment yet.
    `runs`: the experiment's runs when already read (`load_by_experiment`)."""
    experiment = experiment or study.experiment
    found = experiment in (experiments(uri) if known is None else known)
    if found and runs is None:
        runs = load_runs(uri, [experiment], cache=cache)
    return reproduce(study, runs if found else None, extra, agg, metric, experiment_found=found, experiment=experiment)


def seed_document(study: Study) -> str:
    """The seed document a study reproduces: the first `NNN_name.txt` its `source:` names."""
    found = re.search(r"\b\d{3}_[\w.-]+?\.txt\b", study.source)
    return found.group(0) if found else "(unnamed)"


def verdict_counts(reps: list[Reproduction]) -> list[list[str]]:
    """Per seed document (and all): the rows and their counts per verdict."""
    documents: dict[str, list[int]] = {}
    for rep in reps:
        counts = documents.setdefault(seed_document(rep.study), [0] * (1 + len(VERDICTS)))
        counts[0] += len(rep.lines)
        for i, name in enumerate(VERDICTS, start=1):
            counts[i] += rep.counts[name]
    table = [[name, *map(str, counts)] for name, counts in sorted(documents.items())]
    total = [sum(int(row[i]) for row in table) for i in range(1, 2 + len(VERDICTS))]
    return [*table, ["all", *map(str, total)]]


def load_by_experiment(uri: str, wanted: list[str], cache: bool = True) -> dict[str, pd.DataFrame]:
    """The runs of several experiments read at once, one frame per experiment, each as `load_runs` of
    that experiment alone gives it (its own columns only)."""
    if not wanted:
        return {}
    runs = load_runs(uri, wanted, cache=cache)
    frames = {}
    for name, part in runs.groupby("experiment", sort=False):
        part = part[[c for c in part.columns if c in BASE or part[c].notna().any()]].reset_index(drop=True)
        part.attrs = {**runs.attrs, "experiments": [name]}
        frames[str(name)] = part
    return frames


def report(uri: str, studies: list[str] | None = None, digits: int = 2, cache: bool = True) -> str:
    known = experiments(uri)
    chosen = [load(name) for name in studies or names()]
    runs = load_by_experiment(uri, sorted({s.experiment for s in chosen} & known), cache)
    reps = [reproduction(study, uri, known=known, runs=runs.get(study.experiment, _EMPTY)) for study in chosen]
    overview = [[f"[{r.study.name}](#{r.study.name})", str(len(r.lines)), str(r.run_rows),
                 *(str(r.counts[v]) for v in VERDICTS), r.metric] for r in reps]
    total = [sum(int(row[i]) for row in overview) for i in range(1, 3 + len(VERDICTS))]
    head = ["Study", "Rows", "Run", *(v.capitalize() for v in VERDICTS), "Metric"]
    text = [
        "# Reproduction of the seed tables",
        "",
        f"Every study of `sweeps/` against the MLflow store `{uri}` (`python -m sweeps report`; nothing is trained). "
        "Per row, cifarzoo's runs give n, median, mean, s.d. and a 95 % interval of the statistic the source printed "
        "(t for a mean, bootstrap for a median or a best-of-N). A row is *reproduced* when the published number lies "
        "inside that interval (with fewer than 3 runs: within the study's tolerance, 0.2 pp on MNIST-like data and "
        "0.3 pp otherwise unless the study states one), *differs* when outside it, *inconclusive* with fewer than 3 "
        "runs outside the tolerance or an interval wider than twice the tolerance (sweeps/verdict.py).",
        "",
        markdown(["Seed document", "Rows", *(v.capitalize() for v in VERDICTS)], verdict_counts(reps),
                 [False, *([True] * (1 + len(VERDICTS)))]),
        "",
        markdown(head, [*overview, ["all", *map(str, total), ""]], [False, *([True] * (2 + len(VERDICTS))), False]),
    ]
    for rep in reps:
        study = rep.study
        notes = [f"> {line}" if line.strip() else ">" for line in study.notes.strip().splitlines()] or ["> (none)"]
        text += [
            "",
            f'<a id="{study.name}"></a>',
            f"## {study.name}",
            "",
            f"**{study.title}**",
            "",
            f"Source: {study.source}. Experiment `{study.experiment}`.",
            "",
            summary(rep) + ".",
            "",
            table_markdown(rep, digits),
            *([""] + [f"- {line}" for line in footer(rep)] if footer(rep) else []),
            "",
            "Deviations from the source (the study's notes):",
            "",
            *notes,
        ]
    return "\n".join(text) + "\n"
