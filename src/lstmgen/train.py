"""Deprecated: the training loop lives in ``lstmgen.training`` now, and ``lstmgen.train(corpus, ...)`` is the
Python API. This module keeps ``from lstmgen.train import train`` (a run directory from a RunConfig)
working for one more release."""

import sys
import types
import warnings
from typing import Any

from lstmgen.device import peak_memory_mb, pick_device  # noqa: F401
from lstmgen.training.loop import NonFiniteLoss, Progress  # noqa: F401
from lstmgen.training.run import default_run_dir, train  # noqa: F401
from lstmgen.training.signals import TrainingInterrupted  # noqa: F401

warnings.warn("lstmgen.train (the module) is deprecated and goes in the next release: call lstmgen.train(corpus, "
              "**settings) for a trained Run, or import from lstmgen.training.run", FutureWarning, stacklevel=2)


class _CallableModule(types.ModuleType):
    """Importing this module makes it the package's ``train`` attribute: it must still call the API."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from lstmgen.api import train as api_train

        return api_train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
