"""``python -m ftcjax.analysis {double SPEC OUT [--only AXIS=V] | compare DIR_A DIR_B}``: convergence check.

(The module form avoids running ``ftcjax.analysis.convergence`` as ``__main__`` after the package
already imported it.)
"""
from ftcjax.analysis.convergence import main

if __name__ == "__main__":
    raise SystemExit(main())
