"""Test configuration: make shape and dtype bugs fail loudly (equinox's habit)."""
import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
