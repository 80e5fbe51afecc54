"""The training loop's old home: ``lstmgen.training`` holds it now (run, loop, state, timetable)."""

from lstmgen.device import peak_memory_mb, pick_device  # noqa: F401
from lstmgen.training.loop import NonFiniteLoss, Progress, Trainer  # noqa: F401
from lstmgen.training.metrics import tensorboard_writer  # noqa: F401
from lstmgen.training.run import default_run_dir, train  # noqa: F401
from lstmgen.training.signals import TrainingInterrupted  # noqa: F401
