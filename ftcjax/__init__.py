"""ftcjax: measure the fine-tuning capacity of small ReLU networks with batched JAX kernels.

Kernels only: the public names below pull in jax, optax and numpy, never matplotlib, the CLI or the
store (those live in ``ftcjax.sweep``, ``ftcjax.analysis`` and ``ftcjax.cli``). The names are
resolved lazily (module ``__getattr__``, as optax does), so ``import ftcjax`` itself, and with it
``ftcjax --help``, does not import jax.

>>> import jax, ftcjax
>>> problem = ftcjax.make_problem(jax.random.key(0), K=32, d=2, N=2)
>>> protocol = ftcjax.Protocol(depth=2, steps=200, restarts=2, criterion="paper")
>>> result = ftcjax.min_width(problem, key=jax.random.key(1), protocol=protocol, widths=[1, 2, 4])
>>> result.min_width in (1, 2, 4, None)
True
"""
from __future__ import annotations

import importlib

from ftcjax._src.errors import FTCEnvironmentError, FTCInputError

__version__ = "0.1.0"

# public name -> module defining it (one table: what `dir(ftcjax)` lists and `__getattr__` imports)
_PUBLIC = {
    **dict.fromkeys(("CRITERIA", "passed", "residual_stats", "trivially_satisfied"), "ftcjax._src.criteria"),
    **dict.fromkeys(("END_REASONS", "FitResult", "fit", "fit_batch"), "ftcjax._src.fit"),
    **dict.fromkeys(("FORMS", "Additive", "LoRA", "make_form"), "ftcjax._src.forms"),
    **dict.fromkeys(("FROZEN_NETS", "LoRAProblem", "make_lora_problem", "make_lora_problems", "random_frozen"),
                    "ftcjax._src.lora"),
    **dict.fromkeys(("apply_mlp", "forward", "from_layers", "hidden_widths", "init_mlp", "mask_params",
                     "neuron_masks", "to_layers"), "ftcjax._src.networks"),
    **dict.fromkeys(("DATA", "FROZEN", "LABELS", "Problem", "make_problem", "make_problems",
                     "pretrain_frozen", "problem_from_arrays", "stack_problems"), "ftcjax._src.problems"),
    **dict.fromkeys(("OPTIMIZERS", "Protocol", "auto_lanes_per_step"), "ftcjax._src.protocol"),
    **dict.fromkeys(("AdaptiveRule", "Probe", "SearchOutcome", "Trainability", "WidthResult", "isotonic_fit",
                     "min_width", "min_width_batch", "search_widths", "trainability", "width_grid"),
                    "ftcjax._src.search"),
    # reading a run directory from Python (orchestration side; imported only when asked for)
    "load_run": "ftcjax.sweep.results",
}
# The theory side (numpy + fractions, no jax needed): explicit constructions and every bound.
_SUBMODULES = ("bounds", "constructions")

__all__ = sorted([*_PUBLIC, *_SUBMODULES, "FTCEnvironmentError", "FTCInputError", "__version__"])


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"ftcjax.{name}")
    else:
        raise AttributeError(f"module 'ftcjax' has no attribute {name!r}")
    globals()[name] = value  # resolve once; later lookups never reach __getattr__
    return value


def __dir__():
    return __all__
