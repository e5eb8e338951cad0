"""Tables and plots from MLflow runs (see the open analysis issue).

    import analysis
    runs = analysis.load_runs(experiments=["lr-study"], where={"model": "resnet_preact"})
    configs = analysis.aggregate(runs)            # one row per configuration, median over seeds
    print(analysis.render_table(configs))         # the seeds' markdown table
"""

from analysis.aggregate import AGGS, aggregate, pivot, varying_keys
from analysis.errors import AnalysisError
from analysis.formats import render_pivot, render_table
from analysis.labels import format_duration, label
from analysis.runs import completed, excluded_summary, filter_runs, load_runs

__all__ = [
    "AGGS", "AnalysisError", "aggregate", "completed", "excluded_summary", "filter_runs", "format_duration",
    "label", "load_runs", "pivot", "render_pivot", "render_table", "varying_keys",
]
