"""lstmgen: LSTM language models for the novels on your disk.

    import lstmgen

    run = lstmgen.train("novels/", time_budget="10m")   # settings by their flag names; returns a Run
    print(run.generate("郭靖", length=200, seed=1))
    print(run.evaluate().bits_per_char)                    # on its held-out test split
    run = lstmgen.load("runs/novels")

``lstmgen.api`` documents them; importing ``lstmgen`` alone loads none of it (nor torch).
"""

from typing import Any

__version__ = "0.1.0"

API = ("Run", "Score", "load", "resume", "train")
__all__ = [*API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in API:
        from lstmgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'lstmgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
