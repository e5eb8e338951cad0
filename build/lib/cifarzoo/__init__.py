"""cifarzoo: Hydra-composed CIFAR-class image classification sweeps tracked in MLflow."""

from cifarzoo import paths as _paths

_paths.register_resolvers()
