"""cifarzoo: Hydra-composed CIFAR-class image classification sweeps tracked in MLflow."""

import os as _os

# MLflow's usage telemetry thread (on by default) fails offline and has been seen to unset an
# environment variable while another thread read os.environ, killing a run in Tracker.open.
# Off in every cifarzoo process; MLFLOW_DISABLE_TELEMETRY=false turns it back on.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from cifarzoo import paths as _paths  # noqa: E402

_paths.register_resolvers()
