"""``python -m ftcjax.analysis ...``: the convergence checks (also ``ftcjax convergence ...``)."""
from ftcjax.analysis.convergence import main

if __name__ == "__main__":
    raise SystemExit(main())
