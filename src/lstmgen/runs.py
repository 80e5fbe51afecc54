"""Deprecated: the run directory lives in ``lstmgen.model.run_dir`` now, and ``lstmgen.load(path)`` is the
Python API. This module keeps the names the README showed working for one more release."""

import warnings

from lstmgen.files import append_jsonl, atomic_write, write_json, write_jsonl  # noqa: F401
from lstmgen.model.run_dir import (  # noqa: F401
                                   CONFIG,
                                   METRICS,
                                   TOKENIZER,
                                   VOCAB,
                                   WEIGHTS,
                                   TrainedRun,
                                   check_run_dir,
                                   load_run,
                                   load_weights,
                                   read_metrics,
                                   save_weights,
)
from lstmgen.training.checkpoints import load_latest_state, load_state  # noqa: F401

Run = TrainedRun

warnings.warn("lstmgen.runs is deprecated and goes in the next release: use lstmgen.load(path), or import from "
              "lstmgen.model.run_dir", FutureWarning, stacklevel=2)
