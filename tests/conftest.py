"""Test configuration: make shape and dtype bugs fail loudly (equinox's habit)."""
import os

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


# Hermetic tests: CLI runs in subprocesses use a compilation cache private to this test session
# (shared by its runs, so the same programs compile once) instead of the user's ~/.cache/ftcjax.
if "FTCJAX_COMPILATION_CACHE" not in os.environ:
    import tempfile as _tempfile

    os.environ["FTCJAX_COMPILATION_CACHE"] = _tempfile.mkdtemp(prefix="ftcjax-test-cache-")
