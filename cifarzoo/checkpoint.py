"""Checkpoint files: written atomically with the previous one kept, loaded without running code,
and the RNG state that makes a resumed run bit-identical on CPU.

A run dir holds `checkpoint.pt` and, from the second save on, `checkpoint.prev.pt` (the save
before). Both are only ever replaced by a rename of a complete, fsynced file, so a crash or a
full disk leaves at least one readable. Loading uses `torch.load(weights_only=True)`: tensors,
numbers, strings, lists and dicts only, so a crafted pickle in a checkpoint cannot run code.

Each save records the sha256 of the file it wrote in `checkpoint.sha256.json` beside it (the
digests of the last few saves, rewritten atomically before the renames, so whatever a crash
leaves on disk is recorded). torch's zip reader checks no CRC: a checkpoint whose digest is not
recorded (bit rot, a partial copy) is unreadable, and the run resumes from `checkpoint.prev.pt`
with one warning. A dir without the record (written before it existed) is read unchecked."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("cifarzoo")

CHECKPOINT_FILE = "checkpoint.pt"  # in the run's output dir
PREVIOUS_FILE = "checkpoint.prev.pt"  # the save before, kept as the fallback
DIGESTS_FILE = "checkpoint.sha256.json"  # sha256 of the last few files written as checkpoint.pt
_KEEP_DIGESTS = 4
_TMP_GLOB = ".checkpoint*.tmp*"


class CheckpointError(Exception):
    """A checkpoint that cannot be written, or no readable one to resume from; the message is one line."""


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write `state` to a temp file in `path`'s directory, fsync it, keep the current `path` as
    `checkpoint.prev.pt`, then rename the temp file over `path`. A failed write (e.g. a full disk)
    removes the temp file and raises CheckpointError naming the path and the errno."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        _record_digest(path.parent, _sha256(tmp))
        if path.exists():
            os.replace(path, path.with_name(PREVIOUS_FILE))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        cause = _os_error(error)
        if cause is None:
            raise
        raise CheckpointError(f"cannot write checkpoint {path}: [Errno {cause.errno}] {cause.strerror}") from None


def _os_error(error: BaseException | None) -> OSError | None:
    """The OSError behind `error` (torch.save re-raises a failed write as a RuntimeError)."""
    while error is not None and not isinstance(error, OSError):
        error = error.__context__
    return error


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _recorded_digests(directory: Path) -> list[str] | None:
    """The digests `checkpoint.sha256.json` records; None when there is no readable record."""
    try:
        digests = json.loads((directory / DIGESTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return [d for d in digests if isinstance(d, str)] if isinstance(digests, list) else None


def _record_digest(directory: Path, digest: str) -> None:
    """Add `digest` to the record (keeping the last few: the files a crash can leave as
    checkpoint.pt and checkpoint.prev.pt are among them), atomically and durably."""
    digests = [*(_recorded_digests(directory) or []), digest][-_KEEP_DIGESTS:]
    tmp = directory / f".{DIGESTS_FILE}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(json.dumps(digests))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / DIGESTS_FILE)


def _fsync_dir(directory: Path) -> None:
    """Make the renames durable (a power cut must not bring back the old names)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Delete temp files a killed save left behind (call it holding the run dir's lock)."""
    stale = sorted(directory.glob(_TMP_GLOB)) if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def exists(directory: Path) -> bool:
    """Whether `directory` holds a checkpoint (readable or not)."""
    return (directory / CHECKPOINT_FILE).exists() or (directory / PREVIOUS_FILE).exists()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(error: BaseException, limit: int = 200) -> str:
    """An error's first line in whole sentences, without terminal colours: at most `limit`
    characters, cut at a sentence's end, else at a word's, marked with "...". torch's refusal of
    a non-plain-data pickle (a paragraph of instructions to load it unsafely) becomes what it means."""
    text = _ANSI.sub("", str(error)).strip()
    if text.startswith("Weights only load failed"):
        return "it holds objects other than tensors and plain data; they are not loaded, unpickling them could run code"
    text = text.splitlines()[0].strip() if text else type(error).__name__
    if len(text) <= limit:
        return text
    end = text.rfind(". ", 0, limit)
    if end > 0:
        return text[: end + 1]
    cut = text.rfind(" ", 0, limit - 3)
    return text[: cut if cut > 0 else limit - 3].rstrip(",;:") + "..."


def read(path: Path, mmap: bool = False, verify: bool = True) -> dict[str, Any]:
    """Load one checkpoint file with weights_only=True; any failure (truncated, garbage, or an
    object that is not plain data) is a CheckpointError naming the file. `mmap`: tensors are read
    only when used. `verify`: its sha256 must be one that `checkpoint.sha256.json` records (when
    the dir has that record)."""
    try:
        digests = _recorded_digests(path.parent) if verify else None
        if digests is not None and _sha256(path) not in digests:
            raise CheckpointError(f"{path}: unreadable checkpoint (its sha256 is not the one recorded in {DIGESTS_FILE} "
                                  "when it was written: the file changed on disk)")
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            TypeError, AttributeError, KeyError, ImportError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({_reason(error)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a cifarzoo checkpoint")
    return state


def peek(directory: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint in `directory`, its tensors memory-mapped and not read (for
    the checks before a resume); None when none is readable (the resume then says why)."""
    for name in (CHECKPOINT_FILE, PREVIOUS_FILE):
        try:
            return read(directory / name, mmap=True, verify=False)  # the resume itself verifies
        except CheckpointError:
            continue
    return None


def load(path: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint (None when there is none): `path` (a run dir's
    `checkpoint.pt`), else `checkpoint.prev.pt` beside it with a one-line warning. Neither
    readable: CheckpointError with the way out."""
    current, previous = path, path.with_name(PREVIOUS_FILE)
    if not current.exists() and not previous.exists():
        return None
    failures = []
    for path in (current, previous):
        if not path.exists():
            continue
        try:
            state = read(path)
        except CheckpointError as error:
            failures.append(str(error))
            continue
        if failures:
            log.warning("%s; resuming from the previous checkpoint %s (epoch %s, step %s)",
                        failures[0], path.name, state.get("epoch"), state.get("step"))
        return state
    raise CheckpointError(f"{'; '.join(failures)}; no readable checkpoint to resume from: "
                          f"+restart=true starts the run over (or delete {current})")


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Python's, torch's and `generator`'s random state, plus the default CUDA generator of
    `generator`'s GPU (only that one: a data-parallel rank must not touch the other GPUs)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "data": generator.get_state()}
    if generator.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(generator.device)
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if "cuda" in state and generator.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], generator.device)


def rank_states(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Each rank's random state, permutation and sums (checkpoints from before data-parallel runs
    kept the one process's at the top level)."""
    return state["ranks"] if "ranks" in state else [state]


def world_size(state: dict[str, Any]) -> int:
    """How many processes trained the run that wrote `state`."""
    return len(rank_states(state))
