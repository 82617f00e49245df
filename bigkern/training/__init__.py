"""``bigkern train``: the bundled models on data that ships offline (bigkern/training/tasks.py),
through one training loop (bigkern/training/loop.py)."""

from bigkern.training.loop import TrainResult, run
from bigkern.training.tasks import DEFAULTS, TASKS

__all__ = ["run", "TrainResult", "TASKS", "DEFAULTS"]
