"""`python -m sweeps report`: every study's reproduction table in one markdown file, from the MLflow
store alone (nothing is trained): an overview, then per study its rows run, its verdicts, the table
and its deviations from the source (the study's notes)."""

from __future__ import annotations

from analysis.formats import markdown
from analysis.runs import load_runs, open_client
from sweeps.study import Study, load, names
from sweeps.table import Reproduction, footer, reproduce, summary, table_markdown


def experiments(uri: str) -> set[str]:
    """The store's active experiments (a missing sqlite store is an error, never created)."""
    return {e.name for e in open_client(uri).search_experiments()}


def reproduction(study: Study, uri: str, experiment: str | None = None, extra: list[str] = (),
                 agg: str = "median", metric: str | None = None, known: set[str] | None = None) -> Reproduction:
    """The study's table from the store; rows `not run` when the store has no such experiment yet."""
    experiment = experiment or study.experiment
    found = experiment in (experiments(uri) if known is None else known)
    runs = load_runs(uri, [experiment]) if found else None
    return reproduce(study, runs, extra, agg, metric, experiment_found=found, experiment=experiment)


def report(uri: str, studies: list[str] | None = None, digits: int = 2) -> str:
    known = experiments(uri)
    reps = [reproduction(load(name), uri, known=known) for name in studies or names()]
    overview = [[f"[{r.study.name}](#{r.study.name})", str(len(r.lines)), str(r.run_rows), str(r.counts["reproduced"]),
                 str(r.counts["differs"]), str(r.counts["not run"]), str(r.counts["no number"]), r.metric] for r in reps]
    total = [sum(int(row[i]) for row in overview) for i in range(1, 7)]
    head = ["Study", "Rows", "Run", "Reproduced", "Differs", "Not run", "No number", "Metric"]
    text = [
        "# Reproduction of the seed tables",
        "",
        f"Every study of `sweeps/` against the MLflow store `{uri}` (`python -m sweeps report`; nothing is trained). "
        "A row is *reproduced* when the published number lies within the min-max of cifarzoo's runs widened by the "
        "study's tolerance (0.2 pp on MNIST-like data, 0.3 pp otherwise, unless the study states one).",
        "",
        f"Rows run {total[1]}/{total[0]}: reproduced {total[2]}, differs {total[3]}, not run {total[4]}"
        + (f", without a published number {total[5]}" if total[5] else "") + ".",
        "",
        markdown(head, [*overview, ["all", *map(str, total), ""]], [False, True, True, True, True, True, True, False]),
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
