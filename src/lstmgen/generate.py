"""Deprecated: generation lives in ``lstmgen.generation`` now, and ``Run.generate`` is the Python API. This
module keeps ``from lstmgen.generate import GenerateConfig, generate`` working for one more release."""

import warnings

from lstmgen.generation.generate import GenerateConfig, generate  # noqa: F401

warnings.warn("lstmgen.generate is deprecated and goes in the next release: use lstmgen.load(path).generate(...), "
              "or import from lstmgen.generation.generate", FutureWarning, stacklevel=2)
