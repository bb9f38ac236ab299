"""Test configuration: make shape and dtype bugs fail loudly (equinox's habit)."""
import os

# pytest-xdist runs several workers at once: on a GPU, none may take most of its memory up front
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


# Hermetic tests: CLI runs in subprocesses use a compilation cache private to this test session
# (shared by its runs, so the same programs compile once) instead of the user's ~/.cache/ftcjax.
if "FTCJAX_COMPILATION_CACHE" not in os.environ:
    import tempfile as _tempfile

    os.environ["FTCJAX_COMPILATION_CACHE"] = _tempfile.mkdtemp(prefix="ftcjax-test-cache-")

# One directory per test session for what the session computes once (tests/sweep_helpers.py's
# reference runs); pytest-xdist's workers inherit it from the controller, so they share it.
if "FTCJAX_TEST_SESSION_DIR" not in os.environ:
    import tempfile as _tempfile

    os.environ["FTCJAX_TEST_SESSION_DIR"] = _tempfile.mkdtemp(prefix="ftcjax-test-session-")
