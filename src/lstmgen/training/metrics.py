"""Metrics records: what they say about the steps since the last evaluation, and where they go.

A new per-step measure is added to ``MetricsWindow`` alone: ``add`` takes it from the steps,
``summary`` turns it into fields of the record, and ``state_dict`` keeps it across a resume.
``MetricsLog`` writes every field of a record to metrics.jsonl and every number to TensorBoard, and a
sweep's curves.csv takes them as they come.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from lstmgen.errors import LstmgenError
from lstmgen.files import append_jsonl, write_jsonl
from lstmgen.model.run_dir import METRICS, read_metrics


class MetricsWindow:
    """The losses and gradient norms of the steps since the last metrics record."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grad_norms: list[float] = []
        self.clipped = 0  # steps whose gradient norm was clipped

    def add(self, values: np.ndarray, clip: float) -> None:
        """Count in steps' (loss, gradient norm) rows, (steps, 2), of the global batch."""
        self.losses.extend(values[:, 0].tolist())
        self.grad_norms.extend(values[:, 1].tolist())
        if clip > 0:
            self.clipped += int((values[:, 1] > clip).sum())

    def summary(self) -> dict[str, Any]:
        """The record's training fields; the window is then cleared for the next record."""
        norms = np.array(self.grad_norms) if self.grad_norms else np.zeros(1)
        train_loss: Optional[float] = float(np.mean(self.losses)) if self.losses else None
        fields: dict[str, Any] = {
            "train_loss": train_loss,
            "grad_norm_median": float(np.median(norms)), "grad_norm_p95": float(np.percentile(norms, 95)),
            "clip_fraction": self.clipped / max(len(self.grad_norms), 1),
        }
        if train_loss is not None:
            fields["train_perplexity"] = math.exp(min(train_loss, 700))
        self.losses, self.grad_norms, self.clipped = [], [], 0
        return fields

    def state_dict(self) -> dict[str, Any]:
        # what the next record averages over, so that it is the same after a resume
        return {"losses": torch.tensor(self.losses, dtype=torch.float64),
                "grad_norms": torch.tensor(self.grad_norms, dtype=torch.float64), "clipped": self.clipped}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.losses = saved["losses"].tolist() if "losses" in saved else []
        self.grad_norms = saved["grad_norms"].tolist() if "grad_norms" in saved else []
        self.clipped = int(saved.get("clipped", 0))


class MetricsLog:
    """RUN/metrics.jsonl, one JSON object per record, and with ``tensorboard`` RUN/tensorboard too."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS
        self.board: Any = None

    def open_tensorboard(self) -> None:
        """From now on, validation records go to TensorBoard too (``tensorboard --logdir RUN``)."""
        self.board = tensorboard_writer()(log_dir=str(self.path.parent / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, record)
        if self.board is not None and "split" not in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.board.add_scalar(key, value, record["step"])
            self.board.flush()

    def last_step(self) -> Optional[int]:
        """The step of the last record, if there is one."""
        records = read_metrics(self.path.parent)
        return records[-1].get("step") if records else None

    def has_test(self) -> bool:
        return any(r.get("split") == "test" for r in read_metrics(self.path.parent))

    def truncate(self, step: int) -> None:
        """Drop the records written after ``step`` (and any test score): a resumed run writes them again."""
        records = read_metrics(self.path.parent)
        write_jsonl(self.path, [r for r in records if r.get("step", 0) <= step and r.get("split") != "test"])

    def close(self) -> None:
        """The event file complete and its writer thread ended (TensorBoard)."""
        if self.board is not None:
            self.board.close()
            self.board = None


def tensorboard_writer() -> Any:
    """TensorBoard's ``SummaryWriter`` class.

    Raises:
        LstmgenError: the tensorboard package is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LstmgenError("--tensorboard needs the tensorboard package: pip install tensorboard")
    return SummaryWriter
