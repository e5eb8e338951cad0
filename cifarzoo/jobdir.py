"""A job's output dir as the job found it, so that a job that does not train there leaves it so.

Hydra writes `.hydra/` (the job's config and overrides) and opens the job's log in the output dir
before the task starts. A job that then does not train in that dir (a refused resume, a bad
configuration, a skip or a plan of the run the dir holds) must not destroy the dir's record of
how to resume its run. So a job that trains in its dir keeps a copy of Hydra's files in
`.hydra/owner/`; a job that does not puts back what it found there: Hydra's files from that copy,
`outcome.json`, and its log files cut back to their old length. A dir Hydra created for a single
run whose configuration is refused holds nothing else, and is removed."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cifarzoo.paths import outputs_dir

OUTCOME_FILE = "outcome.json"  # a job's outcome (cifarzoo.sweep writes it; defined here, which imports no mlflow)
HYDRA_DIR = ".hydra"
OWNER_DIR = "owner"  # in .hydra/: Hydra's files of the job that trains in this dir
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


@dataclass
class FoundDir:
    path: Path
    fresh: bool  # nothing in it but Hydra's files and empty logs: nothing to lose
    hydra: dict[str, bytes] = field(default_factory=dict)  # the owner's copy of Hydra's files
    outcome: bytes | None = None
    logs: dict[str, int] = field(default_factory=dict)  # length of each log file

    @classmethod
    def look(cls, path: Path) -> FoundDir:
        entries = list(path.iterdir()) if path.is_dir() else []
        logs = {p.name: p.stat().st_size for p in entries if p.suffix == ".log" and p.is_file()}
        fresh = all(p.name == HYDRA_DIR or logs.get(p.name) == 0 for p in entries)
        owner = path / HYDRA_DIR / OWNER_DIR
        hydra = {name: (owner / name).read_bytes() for name in HYDRA_FILES if (owner / name).is_file()}
        outcome = path / OUTCOME_FILE
        return cls(path, fresh, hydra, outcome.read_bytes() if outcome.is_file() else None, logs)

    def claim(self) -> None:
        """The job trains here: its Hydra files become the dir's record."""
        owner = self.path / HYDRA_DIR / OWNER_DIR
        for name in HYDRA_FILES:  # none in a run started without Hydra (tests, `cifarzoo.task.train`)
            if (self.path / HYDRA_DIR / name).is_file():
                owner.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.path / HYDRA_DIR / name, owner / name)

    def put_back(self, logs: bool = True) -> None:
        """Hydra's files (when an owner's copy was found), the outcome and, with `logs`, the logs as
        found (not while another process that holds the dir writes to them)."""
        for name, content in self.hydra.items():
            for where in (self.path / HYDRA_DIR, self.path / HYDRA_DIR / OWNER_DIR):
                (where / name).write_bytes(content)
        outcome = self.path / OUTCOME_FILE
        if self.outcome is None:
            outcome.unlink(missing_ok=True)
        else:
            outcome.write_bytes(self.outcome)
        for path in self.path.glob("*.log") if logs else ():
            if path.name not in self.logs:
                path.unlink(missing_ok=True)
            elif path.stat().st_size > self.logs[path.name]:
                with open(path, "r+b") as f:
                    f.truncate(self.logs[path.name])

    def leave(self, single_run: bool) -> None:
        """After a refusal: a single run's fresh dir goes (and its day folder when that empties);
        a dir that held anything is put back as found."""
        if not self.fresh:
            self.put_back()
            return
        ours = {HYDRA_DIR, OUTCOME_FILE}
        if not single_run or not self.path.is_dir() or any(
                p.name not in ours and p.suffix != ".log" for p in self.path.iterdir()):
            return
        remove_with_empty_parent(self.path, outputs_dir() / "runs")


def remove_with_empty_parent(path: Path, root: Path) -> None:
    """Remove `path`, and its parent (Hydra's day folder) when that is left empty below `root`."""
    shutil.rmtree(path, ignore_errors=True)
    parent = path.parent
    if parent != root and parent.is_relative_to(root) and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
