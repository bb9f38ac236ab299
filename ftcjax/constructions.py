"""Explicit ReLU networks that provably fit fine-tuning instances, worst-case instances and the
exact 1-D breakpoint oracle (paper-notes sections 3-4). numpy + fractions only.

Every construction takes ``x (K, d)``, ``z (K,)`` (0 off ``changed``), ``changed (K,) bool`` and an
explicit ``rng`` (``np.random.Generator`` or int seed) and returns a :class:`Construction` holding the
layers in the shared network format ``((W (out, in), b (out,)), ...)`` (float64, and exact rationals
for the 3-layer and deep ones), the honest hidden ReLU count and the proven bound it meets.

>>> import numpy as np
>>> from ftcjax import constructions as C
>>> x, z, changed = C.worst_case_two_layer(N=4, K=20)
>>> C.min_breakpoints(z)
12
>>> net = C.two_layer_thm44(x, z, changed, rng=0)
>>> net.neurons
12
>>> bool(np.all(C.forward_exact(C.tooth(x, z / 2, changed, rng=0).exact_layers, x) == z / 2))
True
"""
from ftcjax._src.constructions._exact import (
    Construction,
    export_float,
    float_error_bound,
    forward_float,
    forward_exact,
    to_fractions,
)
from ftcjax._src.constructions.deep import deep_stacked, deep_width_bound
from ftcjax._src.constructions.three_layer import (
    kept_set,
    three_layer_4n4,
    three_layer_u1,
    three_layer_u2,
    three_layer_u3,
    tooth,
    tooth_split,
    zero_network,
)
from ftcjax._src.constructions.two_layer import (
    magnitude,
    thm44_bound,
    two_layer_slab,
    two_layer_thm44,
)
from ftcjax._src.worst_case import (
    alternating_turns,
    min_breakpoint_interpolant,
    min_breakpoints,
    turn_signs,
    worst_case_two_layer,
)

__all__ = [
    "Construction", "export_float", "float_error_bound", "forward_float", "forward_exact", "to_fractions",
    "deep_stacked", "deep_width_bound", "kept_set", "three_layer_4n4", "three_layer_u1",
    "three_layer_u2", "three_layer_u3", "tooth",
    "tooth_split", "zero_network", "magnitude", "thm44_bound", "two_layer_slab", "two_layer_thm44",
    "alternating_turns", "min_breakpoint_interpolant", "min_breakpoints", "turn_signs",
    "worst_case_two_layer",
]
