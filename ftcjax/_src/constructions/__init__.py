"""Explicit constructions behind the paper's upper bounds (numpy / fractions only, no jax)."""
