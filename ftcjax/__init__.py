"""ftcjax: measure the fine-tuning capacity of small ReLU networks with batched JAX kernels.

Kernels only: importing ftcjax pulls in jax, optax and numpy, never matplotlib, the CLI or the store
(those live in ``ftcjax.sweep``, ``ftcjax.analysis`` and ``ftcjax.cli``).

>>> import jax, ftcjax
>>> problem = ftcjax.make_problem(jax.random.key(0), K=32, d=2, N=2)
>>> protocol = ftcjax.Protocol(depth=2, steps=200, restarts=2, criterion="paper")
>>> result = ftcjax.min_width(problem, key=jax.random.key(1), protocol=protocol, widths=[1, 2, 4])
>>> result.min_width in (1, 2, 4, None)
True
"""
from ftcjax._src.criteria import CRITERIA, passed, residual_stats, trivially_satisfied
from ftcjax._src.errors import FTCEnvironmentError, FTCInputError
from ftcjax._src.fit import END_REASONS, FitResult, fit, fit_batch
from ftcjax._src.forms import FORMS, Additive, LoRA, make_form
from ftcjax._src.lora import FROZEN_NETS, LoRAProblem, make_lora_problem, make_lora_problems, random_frozen
from ftcjax._src.networks import (
    apply_mlp,
    forward,
    from_layers,
    hidden_widths,
    init_mlp,
    mask_params,
    neuron_masks,
    to_layers,
)
from ftcjax._src.problems import (
    DATA,
    FROZEN,
    LABELS,
    Problem,
    make_problem,
    make_problems,
    pretrain_frozen,
    problem_from_arrays,
    stack_problems,
)
from ftcjax._src.protocol import OPTIMIZERS, Protocol
from ftcjax._src.search import (AdaptiveRule, Probe, SearchOutcome, Trainability, WidthResult, isotonic_fit,
                                min_width, min_width_batch, search_widths, trainability, width_grid)

__version__ = "0.1.0"

# The theory side (numpy + fractions, no jax needed): explicit constructions and every bound.
from ftcjax import bounds, constructions  # noqa: E402
