"""Theoretical bounds on fine-tuning capacity (paper-notes section 2), one function each, with the
source named in every docstring.

>>> from ftcjax import bounds
>>> bounds.thm41_two_layer(N=5, K=100)
(15, 16)
>>> round(bounds.thm51_u3(N=10), 3)
33.941
"""
from ftcjax._src.bounds import (
    cor42_two_layer_capacity,
    cor52_three_layer_capacity,
    generic_three_layer_lower,
    generic_three_layer_slope,
    generic_two_layer_lower,
    prop61_width,
    slab_two_layer,
    three_layer_line_lower,
    thm41_two_layer,
    thm44_data_dependent,
    thm51_lower,
    thm51_lower_int,
    thm51_u1,
    thm51_u2,
    thm51_u3,
    thm51_upper,
    tooth_neurons,
)
from ftcjax._src.worst_case import min_breakpoints

__all__ = [
    "cor42_two_layer_capacity", "cor52_three_layer_capacity", "generic_three_layer_lower",
    "generic_three_layer_slope", "generic_two_layer_lower", "prop61_width", "slab_two_layer",
    "three_layer_line_lower", "thm41_two_layer", "thm44_data_dependent", "thm51_lower",
    "thm51_lower_int", "thm51_u1", "thm51_u2", "thm51_u3", "thm51_upper", "tooth_neurons",
    "min_breakpoints",
]
