"""What every command line of cifarzoo shares (docs/cli.md has the table):

- the MLflow store and experiment are named the same way everywhere: the flags `--tracking-uri URI`
  and `--experiment NAME`, or run.py's own keys as Hydra-style words `tracking.uri=URI` and
  `tracking.experiment=NAME`; by default the store is run.py's (`$MLFLOW_TRACKING_URI`, else
  outputs/mlflow.db);
- a store that is not there is refused, never created (MLflow would create an empty sqlite file);
- exit codes: 0 done, 1 nothing found (or a run failed), 2 bad input (a wrong flag, name or path)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

OK, NOTHING_FOUND, BAD_INPUT = 0, 1, 2
STORE_WORDS = {"tracking.uri": "tracking_uri", "tracking.experiment": "experiment"}


class CliError(ValueError):
    """One line on stderr, `<prog>: error: <message>`, and exit `status`."""

    def __init__(self, message: str, status: int = BAD_INPUT) -> None:
        super().__init__(message)
        self.status = status


def add_store_args(parser: argparse.ArgumentParser, experiment: str | None = None) -> None:
    """`--tracking-uri` and, when `experiment` is given (its default), `--experiment`."""
    parser.add_argument("--tracking-uri", default=None, metavar="URI",
                        help="the MLflow store; also tracking.uri=URI (default: $MLFLOW_TRACKING_URI, else outputs/mlflow.db)")
    if experiment is not None:
        parser.add_argument("--experiment", default=None, metavar="NAME",
                            help=f"also tracking.experiment=NAME (default: {experiment})")


def take_store_words(args: argparse.Namespace, words: Sequence[str]) -> list[str]:
    """Set `args.tracking_uri` / `args.experiment` from `tracking.uri=` / `tracking.experiment=` words
    (a flag and a word naming different values is bad input); the other words are returned."""
    rest = []
    for word in words:
        key, _, value = word.lstrip("+").partition("=")
        if key not in STORE_WORDS or not value:
            rest.append(word)
            continue
        attr = STORE_WORDS[key]
        given = getattr(args, attr, None)
        if given not in (None, value):
            raise CliError(f"{key}: given twice ({given!r} and {value!r})")
        setattr(args, attr, value)
    return rest


def tracking_uri(given: str | None) -> str:
    from cifarzoo.paths import default_tracking_uri

    return given or default_tracking_uri()


def open_store(uri: str) -> Any:
    """An MlflowClient on a store that exists: a mistyped sqlite path or a server that does not
    answer is a CliError (exit 2) naming `--tracking-uri`."""
    from mlflow.tracking import MlflowClient

    from cifarzoo.errors import ConfigError
    from cifarzoo.tracking import check_reachable, sqlite_path

    try:
        check_reachable(uri)
    except ConfigError as error:
        raise CliError(f"--tracking-uri: {str(error)[len(error.key) + 2:]}") from None
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise CliError(f"--tracking-uri: no MLflow store at {db} (runs write to $MLFLOW_TRACKING_URI, else "
                       "outputs/mlflow.db)")
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any, name: str) -> str:
    """The experiment's id; one that does not exist is bad input that lists the store's experiments."""
    found = client.get_experiment_by_name(name)
    if found is None or found.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        raise CliError(f"--experiment: no experiment {name!r} (experiments: {', '.join(names) or 'none'})")
    return found.experiment_id


def words_as_flags(argv: Sequence[str]) -> list[str]:
    """`tracking.uri=URI` / `tracking.experiment=NAME` anywhere in `argv` as the flags they stand
    for, for a CLI whose parser takes the flags (`analysis`, `cifarzoo.evaluate`)."""
    out: list[str] = []
    for word in argv:
        key, _, value = word.lstrip("+").partition("=")
        out += [f"--{STORE_WORDS[key].replace('_', '-')}", value] if key in STORE_WORDS and value else [word]
    return out


def flags_as_words(tracking_uri: str | None, experiment: str | None) -> list[str]:
    """The flags as run.py overrides, for a CLI that composes run.py's config (`cifarzoo.lr_find`)."""
    return [f"{key}={value}" for key, value in (("tracking.uri", tracking_uri), ("tracking.experiment", experiment))
            if value]
