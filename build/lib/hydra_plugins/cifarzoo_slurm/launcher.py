"""cifarzoo's SLURM launcher (conf/hydra/launcher/slurm.yaml): hydra-submitit-launcher's, with a
refused submission as one line and no sweep dir left behind (cifarzoo.slurm)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import FailedJobError

        try:
            return super().launch(job_overrides, initial_job_idx)
        except FailedJobError as error:  # also raised for a job that failed: only sbatch's refusal is ours
            cause = error.__cause__
            if not (isinstance(cause, subprocess.CalledProcessError) and "sbatch" in str(cause.cmd[0])):
                raise
            from cifarzoo.slurm import remove_unsubmitted, sbatch_refusal

            remove_unsubmitted(Path(str(self.config.hydra.sweep.dir)))
            print(f"cifarzoo: error: {sbatch_refusal(str(error), self.params)}", file=sys.stderr)
            raise SystemExit(2) from None
