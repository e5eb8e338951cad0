"""Train one configuration, or a sweep with `-m`: `python run.py -m model.depth=20,56 seed=1,2,3`."""

import hydra
from omegaconf import DictConfig

import cifarzoo  # noqa: F401  (registers the config resolvers)
from cifarzoo.task import main as task_main


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return task_main(cfg)


if __name__ == "__main__":
    main()
