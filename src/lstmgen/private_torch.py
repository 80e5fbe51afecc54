"""The private torch functions lstmgen uses for speed, each fenced: checked once, with a public fallback.

A private function may be renamed, change its arguments or vanish in any torch release. Each one here
is looked up and checked against the same computation in public operations the first time a process
needs it (per device type); where it is missing, fails or disagrees beyond the tolerance stated beside
its check, one log line says so and the public path serves for the rest of the process: slower, with
the same numbers.

    torch._fused_adam_, torch._fused_adamw_  Adam and AdamW in a few kernels a step (optim.FusedAdam)
    torch._weight_int8pack_mm                 products with int8 weights (onetoken: generation on a CPU)
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Callable, Optional

import torch

logger = logging.getLogger(__name__)

AdamKernel = Callable[..., None]
Int8Matmul = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# The fused kernel and Adam in public operations after three steps from the same start: the same
# algorithm in float32, so only the order of rounding differs.
ADAM_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
# The int8 kernel returns bf16 (8 bits of mantissa): its products agree with fp32 ones to about 0.4%.
INT8_TOLERANCE = {"rtol": 2e-2, "atol": 2e-2}


def adam_public(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], *, lr: float, beta1: float, beta2: float,
                weight_decay: float, eps: float, decoupled: bool) -> None:
    """One Adam step (AdamW's with ``decoupled``) in public tensor operations, in place.

    ``steps`` already count this step. The algorithm of ``torch.optim.Adam``/``AdamW``: weight decay
    as L2 in the gradient, or decoupled (the weights shrink by ``lr * weight_decay``); bias-corrected
    moments.
    """
    for param, grad, exp_avg, exp_avg_sq, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        if weight_decay and decoupled:
            param.mul_(1 - lr * weight_decay)
        elif weight_decay:
            grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        count = float(step)
        denominator = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** count)).add_(eps)
        param.addcdiv_(exp_avg, denominator, value=-lr / (1 - beta1 ** count))


@functools.lru_cache(maxsize=None)
def fused_adam(decoupled: bool, device_type: str) -> Optional[AdamKernel]:
    """torch's fused Adam (AdamW with ``decoupled``) kernel on ``device_type``, with ``adam_public``'s
    arguments; None where it is missing, fails or disagrees with ``adam_public``."""
    name = "_fused_adamw_" if decoupled else "_fused_adam_"
    kernel = getattr(torch, name, None)
    if kernel is None:
        return _give_up(name, "is missing", "Adam runs in public tensor operations")

    def fused(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
              exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], *, lr: float, beta1: float, beta2: float,
              weight_decay: float, eps: float) -> None:
        kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr, beta1=beta1, beta2=beta2,
               weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False, grad_scale=None, found_inf=None)

    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(shape, generator=generator) for shape in ((7, 5), (5,))]
    grads = [[torch.randn(p.shape, generator=generator).to(device_type) for p in start] for _ in range(3)]
    results = []
    try:
        for step_fn in (fused, functools.partial(adam_public, decoupled=decoupled)):
            params = [p.to(device_type, copy=True) for p in start]
            moments = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
            steps = [torch.zeros((), device=device_type) for _ in params]
            for grad in grads:
                for step in steps:
                    step.add_(1)
                step_fn(params, [g.clone() for g in grad], *moments, steps, lr=0.01, beta1=0.9, beta2=0.999,
                        weight_decay=0.1, eps=1e-8)  # a kernel may add the weight decay into the gradient
            results.append(torch.cat([t.flatten().cpu() for t in (*params, *moments[0], *moments[1])]))
    except Exception as err:  # any failure of a private function: the public path serves
        return _give_up(name, f"failed ({type(err).__name__}: {err})", "Adam runs in public tensor operations")
    if not torch.allclose(results[0], results[1], **ADAM_TOLERANCE):
        difference = float((results[0] - results[1]).abs().max())
        return _give_up(name, f"disagrees with Adam in public operations (by up to {difference:.2g})",
                        "Adam runs in public tensor operations")
    return fused


def dequantize_rows(weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """int8 ``weight`` (N, K) with one bf16 scale per row -> the fp32 weights it stands for, (N, K)."""
    return weight.float() * scales.float()[:, None]


def int8_matmul_public(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x (B, K) times int8 ``weight`` (N, K) with one bf16 scale per row, in fp32: (B, N)."""
    return x.float() @ dequantize_rows(weight, scales).t()


@functools.lru_cache(maxsize=None)
def int8_matmul() -> Optional[Int8Matmul]:
    """torch's kernel for ``int8_matmul_public`` (bf16 x, bf16 result) on a CPU; None where it is
    missing, fails or disagrees with ``int8_matmul_public``."""
    name = "_weight_int8pack_mm"
    kernel = getattr(torch, name, None)
    fallback = "int8 weights are multiplied in fp32, and generation's --precision auto uses fp32"
    if kernel is None:
        return _give_up(name, "is missing", fallback)
    generator = torch.Generator().manual_seed(0)
    # widths the kernel takes (multiples of 16), inputs new and so aligned, as onetoken gives it
    weight = torch.randint(-127, 128, (48, 64), generator=generator, dtype=torch.int8)
    scales = (torch.rand(48, generator=generator) / 64 + 1e-3).bfloat16()
    x = torch.randn(3, 64, generator=generator).bfloat16()
    try:
        got = kernel(x, weight, scales).float()
    except Exception as err:
        return _give_up(name, f"failed ({type(err).__name__}: {err})", fallback)
    expected = int8_matmul_public(x, weight, scales)
    if got.shape != expected.shape or not torch.allclose(got, expected, **INT8_TOLERANCE):
        return _give_up(name, "disagrees with the same product in public operations", fallback)
    return kernel


def _give_up(name: str, problem: str, fallback: str) -> None:
    logger.warning("torch.%s %s in torch %s: %s (slower; the numbers agree within rounding)", name, problem, torch.__version__, fallback)
    return None
