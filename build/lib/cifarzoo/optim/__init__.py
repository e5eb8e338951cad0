"""Optimizers of the `optim` group. Each option is a factory holding its hyper-parameters;
`build(model, batch_size)` makes the torch optimizer once the model exists.

Shared keys (every option): `lr`, `weight_decay`, `no_weight_decay_on_bn`, `lr_scaling`,
`base_batch_size` -- see `OptimizerFactory`. One module per family: sgd, adam (adam, adamw,
amsgrad), adabound, lars, sam (sam and asam, around any of the others)."""

from cifarzoo.optim.adabound import AdaBound, AdaBoundOptimizer
from cifarzoo.optim.adam import Adam, AdamW, AMSGrad
from cifarzoo.optim.base import NORM_TYPES, OptimizerFactory, split_no_weight_decay
from cifarzoo.optim.lars import LARS, LARSOptimizer
from cifarzoo.optim.sam import SAM, SharpnessAware
from cifarzoo.optim.sgd import SGD

# The optimizers SAM can wrap, by their `optim` option name.
BASE_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "amsgrad": AMSGrad, "adabound": AdaBound, "lars": LARS}

__all__ = [
    "BASE_OPTIMIZERS", "NORM_TYPES", "OptimizerFactory", "split_no_weight_decay", "SAM", "SharpnessAware",
    "SGD", "Adam", "AdamW", "AMSGrad", "AdaBound", "AdaBoundOptimizer", "LARS", "LARSOptimizer",
]
