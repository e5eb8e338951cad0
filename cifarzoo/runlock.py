"""One writer per run: an exclusive lock file for the life of the run. `RunLock(run_dir)` holds
the run dir's `run.lock`; `RunLock(folder, name)` any other lock file (the claim of a
configuration and seed in a store, `cifarzoo.task`).

A lock file is created with O_EXCL (atomic on local disks and NFS) and holds the holder's host,
pid, process start time (`/proc/<pid>/stat`) and SLURM job id. A process that finds it held by a
live process is "running elsewhere" and leaves the run alone. A lock is stale, and taken over,
when its holder is dead on this host, is a process that reused the pid (its start time differs),
is this very process without holding it, was an earlier start of this same SLURM job (a requeued
job resumes its own run), or the file is not a lock record at all (malformed). A holder on
another host cannot be checked from here: delete the file by hand if that host is gone."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_FILE = "run.lock"
_HELD: set[Path] = set()  # lock files this process holds (a test may hold one "as another job would")


class RunLocked(Exception):
    """The run is held by another live process; the message (one line) says which, `record` is
    the holder's lock record (empty when unknown)."""

    def __init__(self, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.record = record or {}


def start_time(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22);
    None where there is no /proc or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def _me() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start_time": start_time(os.getpid()),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder(directory: Path, name: str = LOCK_FILE) -> dict[str, Any] | None:
    """The live holder of `directory/name`, or None when it is free or stale."""
    path = directory / name
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # Being written this instant (created, not yet filled) or garbage: only a live writer
        # could be mid-write, and a garbage file has no holder to protect.
        return None if _older_than(path, 10.0) else {"host": "?", "pid": "?"}
    if path.resolve() in _HELD:
        return record
    if not _well_formed(record):
        return None
    me = _me()
    if record.get("slurm_job_id") and record.get("slurm_job_id") == me["slurm_job_id"]:
        return None  # an earlier start of this job (requeued): it is gone
    if record["host"] != me["host"]:
        return record
    pid = record["pid"]
    if pid == me["pid"] or not _alive(pid):
        return None  # this process does not hold it (a copy of an old record), or the holder died
    if me["start_time"] is not None and record.get("start_time") != start_time(pid):
        return None  # the pid belongs to another process now (or the record has no start time to prove it)
    return record


def _well_formed(record: Any) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("host"), str) and record["host"] != ""
            and type(record.get("pid")) is int and record["pid"] > 0)


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return True


def describe(record: dict[str, Any], name: str = LOCK_FILE) -> str:
    job = f", SLURM job {record['slurm_job_id']}" if record.get("slurm_job_id") else ""
    where = f", training in {record['run_dir']}" if record.get("run_dir") else ""
    return f"running elsewhere: {name} held by pid {record.get('pid')} on {record.get('host')}{job}{where}"


class RunLock:
    """`with RunLock(directory):` holds the lock file; raises RunLocked if a live process does.
    `extra`: written into the record (e.g. the run dir a claim trains in)."""

    def __init__(self, directory: Path, name: str = LOCK_FILE, **extra: str) -> None:
        self.path, self.name, self.extra = directory / name, name, extra
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
                json.dump({**_me(), **self.extra}, f)
            self.held = True
            _HELD.add(self.path.resolve())
            return
        raise RunLocked(f"could not take {self.path} (another process keeps taking it over)")

    def _remove_if_stale(self) -> None:
        """Under a guard lock, so that two processes taking over one stale lock cannot both win."""
        with open(self.path.with_name(self.name + ".guard"), "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            record = holder(self.path.parent, self.name)
            if record is not None:
                raise RunLocked(describe(record, self.name), record)
            self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.held = False
            _HELD.discard(self.path.resolve())
            try:
                record = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return
            if isinstance(record, dict) and record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
