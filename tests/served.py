"""A real tracking server for tests: `python -m cifarzoo.tracking serve` on 127.0.0.1, stopped and
started at will. One class for every test file that needs one (tests/test_tracking_outage.py,
tests/test_stored_runs_security.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from conftest import free_port
from cifarzoo.paths import REPO_DIR


class Server:
    """`python -m cifarzoo.tracking serve` on a fixed port, its sqlite store and artifacts in `tmp_path`."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.port, self.tmp, self.extra = free_port(), tmp_path, extra
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cifarzoo.tracking", "serve", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.tmp / 'server.db'}", "--artifacts", str(self.tmp / "artifacts"),
             *self.extra],
            cwd=REPO_DIR, stdout=subprocess.DEVNULL, stderr=open(self.tmp / "server.log", "a"), start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.uri}/health", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, (self.tmp / "server.log").read_text()[-2000:]
            time.sleep(0.3)
        raise AssertionError("server did not answer within 120 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # an outage, not a clean shutdown: the server and its workers
            self.proc.wait(timeout=30)
