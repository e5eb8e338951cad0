"""Model families: one module each; the `model` config group `_target_`s their classes."""

from cifarzoo.models.init import count_parameters, init_weights

__all__ = ["count_parameters", "init_weights"]
