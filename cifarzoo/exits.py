"""How `run.py` ends: its exit codes, and the command line that reruns (resumes) a run or a sweep.

    0 finished        1 failed        2 bad configuration        3 diverged
    128+n stopped by signal n (Ctrl-C: 130, SIGTERM: 143) after a checkpoint; rerunning resumes

A multirun exits with the worst of its jobs: stopped by a signal (128+n) > bad configuration (2)
> a job failed, has no readable outcome, or was interrupted in a process of its own (1) > a job
diverged (3) > 0."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

FINISHED, FAILED, BAD_CONFIG, DIVERGED = 0, 1, 2, 3
CTRL_C = 130  # 128 + SIGINT


def worst(*codes: int) -> int:
    """The exit code that says most of several (e.g. of a study's multiruns), in the order above;
    a negative code (a child killed by signal n: -n) counts as 128+n."""
    rank = {BAD_CONFIG: 3, FAILED: 2, DIVERGED: 1, FINISHED: 0}
    as_exit = [128 - c if c < 0 else c for c in codes]
    return max(as_exit, key=lambda c: (c > 128, rank.get(c, 2)), default=FINISHED)


def rerun_command(args: list[str]) -> str:
    """`python run.py ARGS` as a shell line: this interpreter (as `python` when that is the one on
    PATH) and this script (as it was typed; `run.py` when not started as a script)."""
    on_path = shutil.which("python")
    python = "python" if on_path and os.path.realpath(on_path) == os.path.realpath(sys.executable) else sys.executable
    script = sys.argv[0] if sys.argv and Path(sys.argv[0]).name == "run.py" else "run.py"
    return shlex.join([python, script, *args])


def run_hydra_main(hydra_main: Callable[[], Any], on_stop: Callable[[int], None]) -> None:
    """Call run.py's `@hydra.main` function and end with cifarzoo's exit codes:

    - Hydra's own errors composing the config (`+experiment=nope`, `model=nope`, a bad override's
      syntax, an unknown key): one line `cifarzoo: error: overrides: ...`, exit 2;
    - an exception from the task (a single run): its traceback from the task down, exit 1;
    - an OSError before the task (Hydra writing `.hydra/` on a full disk): one line, exit 1;
    - Ctrl-C (KeyboardInterrupt) anywhere: exit 130, after one line;
    - a multirun that stops early (a signal, a second Ctrl-C, an error): `on_stop(code)` prints
      its summary first.

    Hydra prints its errors itself and exits 1 unless HYDRA_FULL_ERROR is set; it is set here so
    that they arrive as exceptions (a user who set it gets Hydra's full traces, as asked)."""
    user_wants_traces = "HYDRA_FULL_ERROR" in os.environ
    os.environ["HYDRA_FULL_ERROR"] = "1"
    task_code = getattr(hydra_main, "__wrapped__", hydra_main).__code__
    try:
        hydra_main()
    except KeyboardInterrupt:
        print("cifarzoo: stopped by Ctrl-C", file=sys.stderr, flush=True)
        on_stop(CTRL_C)
        raise SystemExit(CTRL_C) from None
    except SystemExit as stop:
        if stop.code not in (None, 0):
            on_stop(stop.code if isinstance(stop.code, int) else FAILED)
        raise
    except Exception as error:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from cifarzoo.compose import one_line, unknown_override_line

        task_tb = _from_frame(error.__traceback__, task_code)
        if user_wants_traces:
            raise
        if task_tb is None and isinstance(error, (HydraException, OmegaConfBaseException)):
            which = f"{error.override}: " if isinstance(getattr(error, "override", None), str) else ""
            line = unknown_override_line(str(error), sys.argv[1:]) or f"overrides: {which}{one_line(str(error))}"
            print(f"cifarzoo: error: {line}", file=sys.stderr, flush=True)
            raise SystemExit(BAD_CONFIG) from None
        if task_tb is None and isinstance(error, OSError):  # Hydra writing the run's files: a full disk, ...
            print(f"cifarzoo: error: cannot write the run's files before it starts: {error}", file=sys.stderr, flush=True)
            on_stop(FAILED)
            raise SystemExit(FAILED) from None
        traceback.print_exception(type(error), error, task_tb or error.__traceback__)
        on_stop(FAILED)
        raise SystemExit(FAILED) from None


def _from_frame(tb: TracebackType | None, code: Any) -> TracebackType | None:
    """The traceback from the frame running `code` down, or None when it did not pass there."""
    while tb is not None and tb.tb_frame.f_code is not code:
        tb = tb.tb_next
    return tb
