"""Train one configuration, or a sweep with `-m`: `python run.py -m model.depth=20,56 seed=1,2,3`.
Exit codes (`cifarzoo.exits`): 0 finished, 1 failed, 2 bad configuration, 3 diverged, 128+n signal.

Only Hydra is imported before the config is composed and its keys are checked: torch and mlflow
come with the task, so that a typo is reported in about a second."""

import hydra
from omegaconf import DictConfig

import cifarzoo  # noqa: F401  (registers the config resolvers)
from cifarzoo.exits import run_hydra_main


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from cifarzoo.compose import check_job_keys

    check_job_keys(cfg)
    from cifarzoo.task import main as task_main

    return task_main(cfg)


def sweep_stopped(code: int) -> None:
    from cifarzoo.callbacks import sweep_stopped as summary

    summary(code)


if __name__ == "__main__":
    run_hydra_main(main, on_stop=sweep_stopped)
