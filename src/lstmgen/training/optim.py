"""The optimiser a run names, and weight averaging.

Adam and AdamW run on PyTorch's fused kernels, without ``torch.optim``'s start-up cost; the kernels
are private torch functions, checked once against Adam in public operations (``private_torch``).

Every ``torch.optim`` optimiser imports ``torch._dynamo`` on its first step, state_dict or zero_grad
(for the graph breaks it places around them): several times what the rest of a cached start takes
(BENCHMARKS.md, segmentation: the cached start). ``FusedAdam`` runs the same fused kernel that
``torch.optim.Adam(fused=True)`` / ``AdamW(fused=True)`` run, on the same state, so the weights it
produces are the ones torch's would, and its ``state_dict`` has torch's layout: a run saved by either
resumes with the other. Where a torch has no such kernel (or it fails its check), ``FusedAdam`` takes the
same steps in public tensor operations.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch

from lstmgen.config import TrainConfig
from lstmgen.private_torch import adam_public, fused_adam


class FusedAdam:
    """Adam (``decoupled=False``: weight decay as L2 in the gradient) or AdamW (``decoupled=True``).

    The subset of ``torch.optim.Optimizer`` that training uses: ``param_groups`` (one group; its
    "lr" may be changed between steps), ``state``, ``zero_grad``, ``step``, ``state_dict`` and
    ``load_state_dict``. Parameters must all be on one CUDA or CPU device (fused kernels need torch
    2.4 on the CPU).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = True) -> None:
        params = list(params)
        if not params:
            raise ValueError("FusedAdam got no parameters")
        self.decoupled = decoupled
        self.param_groups: list[dict[str, Any]] = [{
            "params": params, "lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
            "amsgrad": False, "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
            "fused": True, **({"decoupled_weight_decay": True} if decoupled else {}),
        }]
        self.state: dict[torch.nn.Parameter, dict[str, torch.Tensor]] = {}
        self._kernel = (fused_adam(decoupled, params[0].device.type)
                        or functools.partial(adam_public, decoupled=decoupled))

    @property
    def _params(self) -> list[torch.nn.Parameter]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _state_of(self, p: torch.nn.Parameter) -> dict[str, torch.Tensor]:
        state = self.state.get(p)
        if state is None:
            # torch keeps a fused optimiser's step count as a float32 tensor on the parameter's device
            state = self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                     "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                     "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        return state

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        params = [p for p in self._params if p.grad is not None]
        if not params:
            return
        states = [self._state_of(p) for p in params]
        steps = [s["step"] for s in states]
        for step in steps:
            step.add_(1)
        beta1, beta2 = group["betas"]
        self._kernel(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                     [s["exp_avg_sq"] for s in states], steps, lr=float(group["lr"]), beta1=beta1, beta2=beta2,
                     weight_decay=group["weight_decay"], eps=group["eps"])

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: parameters by their index, each group's settings with its indices."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": {i: dict(self.state[p]) for i, p in enumerate(self._params) if p in self.state},
                "param_groups": [{**group, "params": list(range(len(self._params)))}]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Load a state from ``state_dict`` here or from ``torch.optim.Adam``/``AdamW``."""
        groups = saved["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self._params):
            raise ValueError("the saved optimiser state has a different number of parameters")
        ids = groups[0]["params"]
        self.state = {}
        for i, p in zip(ids, self._params):
            if i not in saved["state"]:
                continue
            s = saved["state"][i]
            if s["exp_avg"].shape != p.shape:
                raise ValueError(f"the saved optimiser state for a {tuple(s['exp_avg'].shape)} parameter does not "
                                 f"fit one of {tuple(p.shape)}")
            self.state[p] = {"step": torch.as_tensor(s["step"], dtype=torch.float32).to(p.device).reshape(()),
                             "exp_avg": s["exp_avg"].to(p.device, p.dtype),
                             "exp_avg_sq": s["exp_avg_sq"].to(p.device, p.dtype)}
        self.param_groups[0].update({k: v for k, v in groups[0].items() if k != "params"})


class WeightAverage:
    """An exponential moving average of the parameters (Polyak averaging), kept beside the model.

    After each optimiser step the average moves ``1 - decay`` of the way towards the new weights; for
    the first ``1 / (1 - decay)`` steps it is the plain mean of all the weights so far, so an early
    average is not dragged towards the random start. Validation, the best weights and the test use the
    average (``swapped_in``); training goes on from the raw weights. The average smooths the noise
    of the last few hundred steps, which is what held-out text sees once a model starts to overfit.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], decay: float) -> None:
        self.params = list(params)
        self.decay = decay
        self.updates = 0
        self.averages = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        weight = max(1 - self.decay, 1 / self.updates)
        for average, param in zip(self.averages, self.params):
            average.lerp_(param.detach(), weight)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model's parameters hold the average inside the block and their own values after it."""
        with torch.no_grad():
            own = [p.detach().clone() for p in self.params]
            for param, average in zip(self.params, self.averages):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, value in zip(self.params, own):
                    param.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "averages": list(self.averages)}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        averages = saved["averages"]
        if len(averages) != len(self.params) or any(a.shape != p.shape for a, p in zip(averages, self.params)):
            raise ValueError("the saved weight average does not fit this model's parameters")
        self.updates = int(saved["updates"])
        self.averages = [a.to(p.device, p.dtype) for a, p in zip(averages, self.params)]


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> Any:
    """The optimiser ``config`` names: Adam and AdamW fused on CUDA and the CPU, else torch.optim's."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer in ("adam", "adamw") and device.type in ("cuda", "cpu"):
        # Fused kernels: a few per step instead of one per operation and tensor (what made the seed's
        # step faster than a plain loop's, BENCHMARKS.md); and no torch.optim, whose first step imports
        # torch._dynamo (most of a cached start's time).
        return FusedAdam(params, lr=config.lr, weight_decay=config.weight_decay, decoupled=config.optimizer == "adamw")
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
