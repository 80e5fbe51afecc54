"""The generator's path through an LSTMLM on a CPU: one token per row at a time, fp32 or int8 weights.

Writing one token per row makes every matrix product a matrix-vector product, bound by reading the
weights: for the default model, more bytes a character than one core's cache holds.
OneTokenSteps reads less and calls fewer operators than ``model.features`` followed by
``model.log_probs``: the first layer's input product is looked up per token, the adaptive softmax's
head and its clusters' projections are one matrix, and with ``int8`` every matrix is stored as int8
with one scale per output row (weight-only quantisation: a quarter of the bytes), prepared once in
StepWeights. What int8 costs in held-out bits is measured by bench/int8_fidelity.py (BENCHMARKS.md,
Generation).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from lstmgen.errors import LstmgenError
from lstmgen.model.lstm import LSTMLM, State
from lstmgen.private_torch import dequantize_rows, int8_matmul

# torch's int8 kernel reads 16 columns at a time, with aligned loads from rows starting at 32-byte
# boundaries, and checks neither: other widths gave NaN or a crash. A matrix of another input width
# gets zero columns up to a multiple (and its input zeros to match); an input not on the boundary is
# copied to one.
INT8_WIDTH_MULTIPLE = 16
KERNEL_ALIGNMENT = 32

# Below this input width MKL's x @ W.T for one row is several times slower than x @ (W.T copied), as
# for the default model's thin adaptive-softmax clusters (BENCHMARKS.md, Generation). The copy is made
# up to THIN_COPY_MAX weights.
THIN_WIDTH = 256
THIN_COPY_MAX = 1 << 22


def int8_is_fast() -> bool:
    """Whether torch has its vectorised int8 matrix kernel here: x86 with AVX2 or AVX-512, built by GCC
    or Clang (torch's source leaves the vectorised kernel out of MSVC builds, so not on Windows).
    Elsewhere "auto" keeps fp32: ARM's kernel is unmeasured here, and the portable one is a plain loop."""
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return (capability in ("AVX2", "AVX512") and not sys.platform.startswith("win")
            and int8_matmul() is not None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """"fp32" or "int8" for ``--precision`` on ``device``; "auto" is int8 on a CPU where the kernel is fast.

    Not chosen by the number of rows, though fp32 is the faster from about 32 rows a step: a sample's
    text would then depend on what else is in the batch.
    """
    if precision == "auto":
        return "int8" if device.type == "cpu" and int8_is_fast() else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise LstmgenError("--precision int8 is for generating on a CPU; use fp32 (or auto) on a GPU")
    return precision


def quantize_rows(weight: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) fp32 -> int8 (N, K) and bf16 scales (N,): w ~ q * scale, one scale per row.

    The kernel takes bf16 scales: each is the smallest bf16 value not below the row's largest |w| / 127,
    so every w / scale stays within +-127 and q is the nearest point of the grid the kernel uses. A
    chunk of rows at a time stays in the cache, which made quantising the seed's big output layer several
    times faster than the whole matrix at once. The result is a new tensor, whose rows the kernel can
    read aligned.
    """
    quantized = torch.empty(weight.shape, dtype=torch.int8)
    scales = torch.empty(len(weight), dtype=torch.bfloat16)
    for start in range(0, len(weight), chunk):
        rows = weight[start: start + chunk]
        exact = rows.abs().amax(1).clamp_min(torch.finfo(torch.bfloat16).tiny) / 127
        scale = exact.bfloat16()
        low = scale.float() < exact  # rounded down: one step up (positive bf16 values order as their bits)
        scale[low] = (scale[low].view(torch.int16) + 1).view(torch.bfloat16)
        scales[start: start + chunk] = scale
        quantized[start: start + chunk] = (rows / scale.float()[:, None]).round_().clamp_(-127, 127)
    return quantized, scales


class Threads:
    """Run the block with ``count`` CPU threads (0: those torch has), then restore the previous count."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.saved = 0

    def __enter__(self) -> None:
        self.saved = torch.get_num_threads()
        if self.count and self.count != self.saved:
            torch.set_num_threads(self.count)

    def __exit__(self, *exc: object) -> None:
        if torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)


class _Linear:
    """x (B, K) -> x W^T + b (B, N) in fp32, or from int8 weights.

    int8: the weights as ``quantize_rows`` stores them; x is rounded to bf16 for torch's kernel, which
    returns bf16 (log_softmax then takes it to fp32 as it reads it). Where this torch has no working
    int8 kernel (``private_torch.int8_matmul``), the int8 weights' values are multiplied in fp32.
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *, int8: bool = False) -> None:
        weight = weight.detach().float()
        self.in_features = weight.shape[1]
        self.bias = None if bias is None else bias.detach().float()
        self.kernel = int8_matmul() if int8 else None
        self.int8 = self.kernel is not None
        if int8 and self.kernel is None:  # the public path: the weights int8 holds, in fp32
            weight = dequantize_rows(*quantize_rows(weight))
        if self.int8:
            self.pad = -self.in_features % INT8_WIDTH_MULTIPLE
            # F.pad copies even with nothing to add: the seed's 520 MB output layer would be copied for nothing
            self.weight, self.scale = quantize_rows(F.pad(weight, (0, self.pad)) if self.pad else weight)
        elif self.in_features < THIN_WIDTH and weight.numel() <= THIN_COPY_MAX:
            self.weight_t = weight.t().contiguous()
        else:
            self.weight_t = weight.t()

    def __call__(self, x: torch.Tensor, add: Optional[torch.Tensor] = None, *, threads: int = 0) -> torch.Tensor:
        """x W^T + b (+ ``add``, (B, N)): fp32, or bf16 from int8 weights without ``add`` or a bias.

        ``threads``: for int8, the threads torch's kernel takes for this product alone (0: those it has).
        """
        if not self.int8:
            x = x.float()  # no copy when it is already (an int8 layer before may give bf16)
            extra = add if self.bias is None else self.bias if add is None else add + self.bias
            return x @ self.weight_t if extra is None else torch.addmm(extra, x, self.weight_t)
        if self.pad:
            x = F.pad(x.to(torch.bfloat16), (0, self.pad))  # a new tensor, and new tensors start aligned
        elif not (x.dtype == torch.bfloat16 and x.is_contiguous() and x.data_ptr() % KERNEL_ALIGNMENT == 0):
            x = x.to(torch.bfloat16, copy=True).contiguous()
        if threads:
            had = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                out = self.kernel(x, self.weight, self.scale)
            finally:
                torch.set_num_threads(had)
        else:
            out = self.kernel(x, self.weight, self.scale)
        for extra in (self.bias, add):
            if extra is not None:
                out = torch.add(extra, out)  # fp32 + bf16 -> fp32
        return out


class StepWeights:
    """The model's matrices as OneTokenSteps reads them, fp32 or int8.

    Built once per model and precision, and shared by any number of ``generate`` calls (``lstmgen
    serve`` keeps one): quantising the seed's model takes a few tenths of a second. int8 weights (and
    fp32 copies of thin matrices) are copies: build new ones after the model's weights change.
    """

    def __init__(self, model: LSTMLM, *, int8: bool = False) -> None:
        # int8 with every other core busy: on one thread, which quantised the seed's model about ten
        # times faster than two fighting for the busy cores (BENCHMARKS.md). Rounding row by row: the
        # same numbers either way.
        busy = int8 and torch.get_num_threads() > 1 and not KernelThreads.cores_free()
        with Threads(1 if busy else 0):
            self._build(model, int8)

    def _build(self, model: LSTMLM, int8: bool) -> None:
        lstm = model.lstm
        self.model = model
        self.int8 = int8
        self.hidden = lstm.hidden_size
        self.recurrent = [_Linear(getattr(lstm, f"weight_hh_l{k}"), int8=int8) for k in range(lstm.num_layers)]
        self.upper_inputs = [_Linear(getattr(lstm, f"weight_ih_l{k}"),
                                     getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}"), int8=int8)
                             for k in range(1, lstm.num_layers)]
        self.first_input = _Linear(lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0, int8=int8)
        self.projection = None if model.projection is None else _Linear(model.projection.weight, int8=int8)
        adaptive = model.adaptive
        if adaptive is None:
            self.decoder = _Linear(model.decoder.weight, model.decoder.bias, int8=int8)
            return
        # Every cluster's projection and the head read the same features: one matrix, the projections
        # first. Where their widths are multiples of 16 (the default model's 128 and 32), each one's
        # scores start on a 32-byte boundary and, for one row, the int8 kernel reads them in place.
        projections = [tail[0].weight for tail in adaptive.tail]
        projected = sum(len(w) for w in projections)
        bias = None if adaptive.head.bias is None else F.pad(adaptive.head.bias, (projected, 0))
        self.head = _Linear(torch.cat(projections + [adaptive.head.weight]), bias, int8=int8)
        self.clusters = [_Linear(tail[1].weight, int8=int8) for tail in adaptive.tail]
        # widths to split at, so that each part has a name: the head's scores into projections and
        # head; its log-probabilities into shortlist and clusters; the output into shortlist and each
        # cluster's tokens
        self.score_split = [len(w) for w in projections] + [adaptive.head_size]
        self.head_split = [adaptive.shortlist_size] + [1] * len(adaptive.tail)
        self.out_split = [adaptive.shortlist_size] + [hi - lo for lo, hi in zip(adaptive.cutoffs, adaptive.cutoffs[1:])]


class KernelThreads:
    """How many threads torch's int8 kernel takes in each step: one, or ``most`` while steps with them are faster.

    On an idle machine more threads make the recurrent product faster. On a busy one, a step now and
    then waits milliseconds for a thread the system has not scheduled, and one thread is several times
    faster on average (BENCHMARKS.md, Generation). So the
    counts are timed in turn, over a window of steps: WINDOW steps with one thread (fewer, once they
    have taken WINDOW_SECONDS: a big model's steps are long), then as many with ``most``, given up as
    soon as they have taken longer. The faster is kept for the next KEEP windows; after each loss of
    ``most``, twice as many (up to MAX_KEEP). ``most`` also loses, untried, when other work is running
    on every core but this one (``cores_free``): a try would cost milliseconds. While
    ``most`` is kept, a window of steps that takes longer than the one-thread window did starts the
    timing again. The kernel computes each output on
    one thread, so the count changes no number (a test checks it): only the time.
    """

    WINDOW = 32
    WINDOW_SECONDS = 0.01
    KEEP = 30
    MAX_KEEP = 480

    def __init__(self, most: int) -> None:
        self.most = most
        self.keep = self.KEEP  # windows to keep one thread after the next loss of ``most``
        self._time_both()

    def _time_both(self) -> None:
        self.count = 1  # threads for the coming step
        self.timing = True  # the coming step is timed against the other count
        self.spent = {1: 0.0, self.most: 0.0}  # seconds and steps timed with each count
        self.timed = {1: 0, self.most: 0}
        self.window = self.WINDOW  # steps a window, set when the one-thread steps have been timed
        self.left = 0  # steps to run with ``count`` untimed
        self.window_spent = 0.0  # the current window's time while ``most`` is kept

    def record(self, seconds: float) -> None:
        """The time the step took with ``count`` threads."""
        if self.timing:
            self.spent[self.count] += seconds
            self.timed[self.count] += 1
            if self.count == 1:
                if self.timed[1] == self.WINDOW or self.spent[1] >= self.WINDOW_SECONDS:
                    self.count, self.window = self.most, self.timed[1]
                    if not self.cores_free():
                        self._keep(1)  # not worth a try: one stalled step costs a window or more
            elif self.spent[self.most] > self.spent[1]:
                self._keep(1)  # more threads lost, whatever the rest of their window would take
            elif self.timed[self.most] == self.window:
                self._keep(self.most)
            return
        self.left -= 1
        if self.count == self.most:
            self.window_spent += seconds
            if self.window_spent > self.spent[1]:  # slower than one thread was: the machine got busy
                self._time_both()
                return
            if self.left % self.window == 0:
                self.window_spent = 0.0
        if not self.left:
            self._time_both()

    @staticmethod
    def cores_free() -> bool:
        """Whether a core seems free for another thread: fewer tasks run on the machine at this moment,
        this process's own aside, than its cores less one. Read from /proc (Linux); elsewhere assumed
        so, and the timing decides. Not the load average: this process's own steps and work that has
        just ended weigh in it for a minute, and kept a big model on one thread when the machine was free.
        """
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
            ours = 0
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/stat") as f:
                    ours += f.read().rpartition(")")[2].split()[0] == "R"
        except (OSError, ValueError, IndexError):
            return True
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return running - ours <= cores - 2

    def _keep(self, count: int) -> None:
        """Run with ``count`` threads, untimed: KEEP windows after ``most`` won; after it lost, ``keep``
        windows, twice as many each time it loses again (until it wins)."""
        if count == self.most:
            windows = self.keep = self.KEEP
        else:
            windows, self.keep = self.keep, min(2 * self.keep, self.MAX_KEEP)
        self.count, self.timing, self.left = count, False, windows * self.window


class OneTokenSteps:
    """Log-probabilities of the next token for one token per row at a time, on a CPU.

    ``steps(ids, state)`` gives what ``model.log_probs(model.features(ids[:, None], state)[0][:, -1])``
    gives (up to float rounding in fp32), and the new state. The first layer's input product (plus both
    biases) depends on the token alone: it is computed the first time a token is fed (from int8 weights
    too, with ``int8``) and looked up after. The table takes 4 x hidden floats per distinct token fed and
    lives as long as the object (one ``generate`` call). Not used on a GPU, where cuDNN's LSTM is the
    fast one.

    Args:
        weights: the matrices, prepared once and shared (their ``int8`` then decides); built here when
            left out.
        kernel_threads: with int8 weights, the most threads the int8 kernel may take while the rest of
            the step keeps the threads it has: ``KernelThreads`` gives it these or one, whichever steps
            run faster (None: the kernel, too, keeps the threads it has).
    """

    def __init__(self, model: LSTMLM, *, int8: bool = False, weights: Optional[StepWeights] = None,
                 kernel_threads: Optional[int] = None) -> None:
        if weights is not None and weights.model is not model:
            raise ValueError("StepWeights built for another model")
        self.weights = weights if weights is not None else StepWeights(model, int8=int8)
        self.kernel_threads = (KernelThreads(kernel_threads)
                               if self.weights.int8 and kernel_threads and kernel_threads > 1 else None)
        self.threads = 0  # for the int8 kernel in this step (0: the threads torch has)
        self.model = model
        self.slot: dict[int, int] = {}  # token id -> row of ``table``
        self.table = model.lstm.weight_hh_l0.new_empty(0, 4 * model.lstm.hidden_size)
        self.used = 0

    def input_gates(self, ids: list[int]) -> torch.Tensor:
        """Token ids -> (B, 4H): the first layer's input product plus biases, computed once per token."""
        new = sorted({i for i in ids if i not in self.slot})
        if new:
            if self.used + len(new) > len(self.table):  # grow by doubling: copies stay linear overall
                grown = self.table.new_empty(max(2 * len(self.table), self.used + len(new), 64), self.table.shape[1])
                grown[: self.used] = self.table[: self.used]
                self.table = grown
            embedded = self.model.embedding.weight.detach()[new]  # detached: no autograd graph outside no_grad
            self.table[self.used: self.used + len(new)] = self.weights.first_input(embedded, threads=self.threads)
            self.slot.update((token, self.used + j) for j, token in enumerate(new))
            self.used += len(new)
        if len(ids) == 1:
            row = self.slot[ids[0]]
            return self.table[row: row + 1]
        return self.table[[self.slot[i] for i in ids]]

    def features(self, ids: Union[torch.Tensor, Sequence[int]], state: State) -> tuple[torch.Tensor, State]:
        """(B,) token ids and the (h, c) state -> features (B, F) and the new state."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        weights = self.weights
        h, c = state
        size = weights.hidden
        hs, cs = [], []
        x = h  # from the second layer on: the output of the layer below
        for k, recurrent in enumerate(weights.recurrent):
            extra = self.input_gates(ids) if k == 0 else weights.upper_inputs[k - 1](x, threads=self.threads)
            # (B, 4H): input, forget, cell, output gates
            gates = recurrent(h.select(0, k), add=extra, threads=self.threads)
            # one sigmoid for all four gates (the cell gate's share is not used)
            in_gate, forget, _, out_gate = torch.sigmoid(gates).split(size, dim=1)
            cell = torch.addcmul(forget * c.select(0, k), in_gate, torch.tanh(gates.narrow(1, 2 * size, size)))
            x = out_gate * torch.tanh(cell)
            hs.append(x)
            cs.append(cell)
        state = (x.unsqueeze(0), cell.unsqueeze(0)) if len(hs) == 1 else (torch.stack(hs), torch.stack(cs))
        if weights.projection is not None:
            x = weights.projection(x, threads=self.threads)
        return x, state

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, V) log-probabilities, as ``model.log_probs``."""
        weights = self.weights
        adaptive = self.model.adaptive
        if adaptive is None:
            return torch.log_softmax(weights.decoder(features, threads=self.threads), dim=-1, dtype=torch.float32)
        *projected, head_scores = weights.head(features, threads=self.threads).split(weights.score_split, dim=1)
        shortlist, *cluster_priors = torch.log_softmax(head_scores, dim=1, dtype=torch.float32).split(weights.head_split, 1)
        out = shortlist.new_empty(len(features), adaptive.n_classes)
        out_shortlist, *out_clusters = out.split(weights.out_split, dim=1)
        out_shortlist.copy_(shortlist)
        for cluster, scores, prior, into in zip(weights.clusters, projected, cluster_priors, out_clusters):
            # log p(token) = log p(its cluster) + log p(token | cluster)
            torch.add(torch.log_softmax(cluster(scores, threads=self.threads), dim=1, dtype=torch.float32), prior, out=into)
        return out

    def __call__(self, ids: Union[torch.Tensor, Sequence[int]], state: State) -> tuple[torch.Tensor, State]:
        """(B,) token ids and the (h, c) state -> (B, V) log-probabilities of the next token and the new state."""
        chooser = self.kernel_threads
        if chooser is None:
            features, state = self.features(ids, state)
            return self.log_probs(features), state
        self.threads = chooser.count
        start = time.perf_counter()
        try:
            features, state = self.features(ids, state)
            out = self.log_probs(features)
        finally:
            self.threads = 0
        chooser.record(time.perf_counter() - start)
        return out, state
