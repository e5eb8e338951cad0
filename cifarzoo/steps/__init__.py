"""Training steps: one interface (`TrainStep`), two implementations (eager, graph), chosen once by
`train.step` when the run is built (`cifarzoo.build`)."""

from cifarzoo.steps.base import StepBody, TrainStep
from cifarzoo.steps.choice import STEP_KINDS, StepChoice, check_request, choose, obstacles
from cifarzoo.steps.eager import EagerStep
from cifarzoo.steps.graph import CaptureFailed, GraphStep

__all__ = ["STEP_KINDS", "CaptureFailed", "EagerStep", "GraphStep", "StepBody", "StepChoice", "TrainStep", "check_request", "choose",
           "obstacles"]
