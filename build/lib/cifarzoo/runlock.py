"""One writer per run: an exclusive lock file in the run's dir for the life of the run.

`run.lock` is created with O_EXCL (atomic on local disks and NFS) and holds the holder's host,
pid and SLURM job id. A process that finds it held by a live process is "running elsewhere"
and leaves the run alone. A lock is stale, and taken over, when its holder is dead on this host
or was an earlier start of this same SLURM job (a requeued job resumes its own run). A holder on
another host cannot be checked from here: delete the file by hand if that host is gone."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = "run.lock"


class RunLocked(Exception):
    """The run is held by another live process; the message says which."""


def _me() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder(directory: Path) -> dict[str, object] | None:
    """The live holder of `directory`'s lock, or None when it is free or stale."""
    try:
        record = json.loads((directory / LOCK_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # Being written this instant (created, not yet filled) or garbage: only a live writer
        # could be mid-write, and a garbage file has no holder to protect.
        return None if _older_than(directory / LOCK_FILE, 10.0) else {"host": "?", "pid": "?"}
    if not isinstance(record, dict):
        return None
    me = _me()
    if record.get("slurm_job_id") and record.get("slurm_job_id") == me["slurm_job_id"]:
        return None  # an earlier start of this job (requeued): it is gone
    if record.get("host") == me["host"] and not _alive(int(record.get("pid", 0) or 0)):
        return None
    return record


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return True


def describe(record: dict[str, object]) -> str:
    job = f", SLURM job {record['slurm_job_id']}" if record.get("slurm_job_id") else ""
    return f"running elsewhere: {LOCK_FILE} held by pid {record.get('pid')} on {record.get('host')}{job}"


class RunLock:
    """`with RunLock(directory):` holds the run dir's lock; raises RunLocked if a live process does."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._remove_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(_me(), f)
            self.held = True
            return
        raise RunLocked(f"could not take {self.path} (another process keeps taking it over)")

    def _remove_if_stale(self) -> None:
        """Under a guard lock, so that two processes taking over one stale lock cannot both win."""
        with open(self.path.with_name(LOCK_FILE + ".guard"), "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            record = holder(self.path.parent)
            if record is not None:
                raise RunLocked(describe(record))
            self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                record = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return
            if record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
