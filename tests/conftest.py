"""Test configuration: make shape and dtype bugs fail loudly (equinox's habit)."""
import os

# pytest-xdist runs several workers at once: on a GPU, none may take most of its memory up front
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


# Hermetic tests: CLI runs in subprocesses use a compilation cache private to this test session
# (shared by its runs, so the same programs compile once) instead of the user's ~/.cache/ftcjax.
# One more directory holds what the session computes once (tests/sweep_helpers.py's reference
# runs). pytest-xdist's workers inherit both from the controller, so they share them; the process
# that made them removes them when the session ends.
_MADE_HERE = []
for _var, _prefix in (("FTCJAX_COMPILATION_CACHE", "ftcjax-test-cache-"),
                      ("FTCJAX_TEST_SESSION_DIR", "ftcjax-test-session-")):
    if _var not in os.environ:
        import tempfile as _tempfile

        os.environ[_var] = _tempfile.mkdtemp(prefix=_prefix)
        _MADE_HERE.append(os.environ[_var])


def pytest_unconfigure(config):
    import shutil

    for path in _MADE_HERE:
        shutil.rmtree(path, ignore_errors=True)
