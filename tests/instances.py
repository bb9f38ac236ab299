"""Random fine-tuning instances shared by the construction tests (numpy only)."""
import numpy as np


def random_instance(rng, K, d, N, *, zmax=1.0):
    """``x (K, d)`` Gaussian, ``N`` random changed samples with ``z ~ U[-zmax, zmax]``, 0 elsewhere."""
    x = rng.standard_normal((K, d))
    changed = np.zeros(K, dtype=bool)
    changed[rng.choice(K, N, replace=False)] = True
    z = np.where(changed, rng.uniform(-zmax, zmax, K), 0.0)
    return x, z, changed
