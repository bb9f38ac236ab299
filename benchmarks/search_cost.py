"""Cost and accuracy of the width-search rules on synthetic trainers with a known p(w).

Each instance has a known success probability p(w) (step, logistic in log w, logistic with a dip,
a window of success; w50 log-uniform inside the candidate range). Every restart is a Bernoulli draw
of p(w) (``ftcjax.analysis.synthetic.bernoulli_trainer``), so the table measures the search rules
alone, in trainings per instance, beside how often each rule lands within one candidate step of
the true typical width w50 (smallest candidate with p >= 1/2), how often it censors, how often it
flags non-monotonicity, and (adaptive) how often its stored w50 interval holds the true w50.

    python3 benchmarks/search_cost.py            # ~3-6 min on 2 busy cores
    python3 benchmarks/search_cost.py --quick    # fewer instances (a smoke run)

The grid's "recovery" counts its smallest success; bisection's its transition; the adaptive rule's
its w50. No kernel is run: this is the statistics of the search, not its speed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from ftcjax import search_widths  # noqa: E402
from ftcjax._src.search import AdaptiveRule  # noqa: E402
from ftcjax.analysis import synthetic as syn  # noqa: E402

DESIGNS = {  # name -> (candidate widths, logistic scale in log w)
    "fig9 6..48 step 6": (list(range(6, 49, 6)), 0.2),
    "unit 1..48": (list(range(1, 49)), 0.05),
    "unit 1..48, wide transition": (list(range(1, 49)), 0.2),
}


def families(widths, n, scale, seed=0):
    rng = np.random.default_rng(seed)
    w50 = np.exp(rng.uniform(np.log(widths[0] * 1.5), np.log(widths[-1] / 1.5), n))

    def dip_at(w):
        j = max(int(np.searchsorted(widths, w * np.exp(3 * scale))), int(np.searchsorted(widths, w)) + 2)
        return [widths[j]] if j < len(widths) - 1 else []

    return {"step": [syn.step_p(w) for w in w50],
            "logistic": [syn.logistic_p(w, scale=scale) for w in w50],
            "dip": [syn.dip_p(w, dip_at(w), scale=scale) for w in w50],
            "window": [syn.window_p(w, 2.5 * w) for w in w50]}


def _interval_steps(iv, widths):
    """Candidate steps spanned by a stored w50 interval (lo, hi]: inf when open above or not given."""
    if iv is None or iv[1] is None:
        return np.inf
    lo = int(np.searchsorted(widths, iv[0], side="right"))  # first candidate above lo
    return float(widths.index(iv[1]) - lo + 1)


def measure(widths, ps, restarts, strategy, seed=1, rule=None):
    n = len(ps)
    truth = [syn.true_w50(p, widths) for p in ps]
    out = search_widths(syn.bernoulli_trainer(ps, restarts=restarts, seed=seed), n, widths, strategy, rule=rule)
    hit = [w is not None and t is not None and abs(widths.index(w) - widths.index(t)) <= 1
           for w, t in zip(out.min_width, truth)]
    cov = [e.w50_interval is not None and t is not None and e.w50_interval[0] < t
           and (e.w50_interval[1] is None or t <= e.w50_interval[1]) for e, t in zip(out.estimates, truth)]
    span = [_interval_steps(e.w50_interval, widths) for e in out.estimates]
    return dict(recovery=float(np.mean(hit)), cost=float(np.mean([sum(p.restarts for p in pr) for pr in out.probes])),
                censored=float(np.mean(out.censored)), non_monotone=float(np.mean(out.non_monotone)),
                interval=float(np.mean(cov)) if strategy == "adaptive" else None,
                span=float(np.median(span)) if strategy == "adaptive" else None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 instances per family instead of 100")
    ap.add_argument("--restarts", default="1,2,4", help="comma-separated restart counts")
    args = ap.parse_args(argv)
    n = 20 if args.quick else 100
    t0 = time.time()
    head = ["design", "R", "p(w)", "adaptive rec", "v1 rec", "bisect rec", "grid rec", "adaptive cost", "v1 cost",
            "bisect cost", "grid cost", "adaptive cens", "bisect cens", "adaptive nm", "grid nm", "w50 interval",
            "interval steps"]
    rows = []
    for design, (widths, scale) in DESIGNS.items():
        for R in (int(r) for r in args.restarts.split(",")):
            for fam, ps in families(widths, n, scale).items():
                m = {s: measure(widths, ps, R, s) for s in ("adaptive", "bisect", "grid")}
                v1 = measure(widths, ps, R, "adaptive", rule=AdaptiveRule.v1())
                rows.append([design, R, fam, f"{m['adaptive']['recovery']:.2f}", f"{v1['recovery']:.2f}",
                             f"{m['bisect']['recovery']:.2f}",
                             f"{m['grid']['recovery']:.2f}", f"{m['adaptive']['cost']:.1f}", f"{v1['cost']:.1f}",
                             f"{m['bisect']['cost']:.1f}", f"{m['grid']['cost']:.1f}",
                             f"{m['adaptive']['censored']:.2f}", f"{m['bisect']['censored']:.2f}",
                             f"{m['adaptive']['non_monotone']:.2f}", f"{m['grid']['non_monotone']:.2f}",
                             f"{m['adaptive']['interval']:.2f}", f"{m['adaptive']['span']:g}"])
    wid = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(x).rjust(w) for x, w in zip(r, wid))
    print(f"Width-search rules on known p(w): {n} instances per family; rec = share within one candidate "
          "step of the true w50 (adaptive = the current rule, v1 = adaptive-v1's parameters); cost = trainings "
          "per instance; cens = share censored; nm = share flagged non-monotone; w50 interval = share of adaptive "
          "intervals holding the true w50; interval steps = their median length in candidate steps (inf: open above)")
    print(fmt(head))
    print(fmt(["-" * w for w in wid]))
    for r in rows:
        print(fmt(r))
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
