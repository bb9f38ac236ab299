"""The minimal trainable width per instance, searched in lockstep across a batch.

Training succeeds at a width with some probability ``p(w)``: every restart is a Bernoulli draw.
Three named search rules (``strategy``; the version string ``search_rule`` goes into every record,
so results of different rules are never mixed silently):

* ``"adaptive"`` (default, rule ``adaptive-v2``; ``adaptive-v1`` records, from a smaller per-width
  and total probe budget, stay readable and are grouped apart): a *typical width* ``w50`` (smallest candidate where
  ``p(w) >= 1/2``) estimated from a monotone fit of ``p``, plus an *existence width* (smallest
  candidate with any success, with the failed trials behind it). See :func:`trainability` for the
  model and :func:`search_widths` for where restarts are spent. An instance is *censored* only when
  the fit says ``p(top) < 1/2`` at the stated confidence after ``min_top_probes`` probes at the top
  AND a probe at a narrower width; never from one failed probe.
* ``"bisect"`` (``bisect-v1``, the old rule): probe the largest candidate, censor if it fails,
  otherwise bisect keeping "``hi`` succeeded, every candidate below ``lo`` failed". Cheap, but each
  probe is one noisy draw of ``p``: the answer moves with the restart count and a single failed top
  probe censors.
* ``"grid"`` (``grid-v1``): probe every candidate; ``min_width`` is the smallest success and
  ``non_monotone`` flags any failure above it.

For the old rules a *probe* succeeds when at least ``protocol.min_successes`` restarts meet the
decision criterion. ``trivial`` flags instances where ``g = 0`` already meets the criterion (any width
"succeeds" and the width says nothing about capacity).

All instances advance one round at a time, and every round is ONE kernel call over the lanes of all
active instances, each lane at its own width through the mask. Lane keys are
``fold_in(fold_in(key, width), restart)``; the k-th probe of an instance at one width uses restarts
``k R .. (k + 1) R - 1`` (``Probe.first_restart``), so extra restarts are fresh and reproducible and a
probe's result does not depend on the round or the batch it ran in.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ftcjax._src import criteria
from ftcjax._src.errors import FTCInputError
from ftcjax._src.fit import END_REASONS, fit_batch, validate_widths
from ftcjax._src.networks import to_layers
from ftcjax._src.problems import Problem
from ftcjax._src.protocol import Protocol, round_lanes_per_step

# strategy name -> its versioned rules, oldest first (bump the version when a rule changes); the version
# string goes into every record, and the last one is what the strategy name means now
RULE_VERSIONS = {"adaptive": ("adaptive-v1", "adaptive-v2"), "bisect": ("bisect-v1",), "grid": ("grid-v1",)}
RULES = {strategy: versions[-1] for strategy, versions in RULE_VERSIONS.items()}
STRATEGIES = tuple(RULES)
DEFAULT_STRATEGY = "adaptive"
REPORT_WIDTHS = ("typical", "existence")


@dataclasses.dataclass
class Probe:
    """Training ``restarts`` runs of one instance at one width (per-run lists have length ``restarts``).

    ``first_restart``: restart index of the first run (lane keys fold in ``first_restart + r``), so
    repeated probes at one width are fresh, reproducible draws.
    ``mse``, ``max_err``, ``passed`` are at the stop (the first success, or the end); ``*_end`` at the
    end of training (they differ only when ``stop_on_success`` is off). ``end_reason`` names why each
    run ended (``fit.END_REASONS``), ``weight_max`` its max |W| per layer, ``history`` (when
    ``history_every > 0``) ``{"every": s, "mse": [[...] per run], "max_err": [[...] per run]}``.
    ``params`` (not stored in records) is the first successful run's trained net as plain layers,
    kept only when the search was asked to ``return_params``.
    """

    width: int
    success: bool
    successes: int
    restarts: int
    mse: list
    max_err: list
    steps: list
    passed: dict  # criterion name -> list of bools
    first_restart: int = 0
    mse_end: list | None = None
    max_err_end: list | None = None
    end_reason: list | None = None
    weight_max: list | None = None
    history: dict | None = None
    params: list | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "params"}
        return copy.deepcopy(d)


@dataclasses.dataclass(frozen=True)
class AdaptiveRule:
    """Parameters of the adaptive rule (stored with every result; defaults are the rule).

    confidence: one-sided Clopper-Pearson level of every decision "p(w) >= 1/2" / "p(w) < 1/2".
    ladder_ratio: factor between the widths of the coarse first pass (a doubling ladder by default).
    min_top_probes: probes at the top width before an instance may be censored.
    max_probes: probes per instance (default ``2 ceil(log2 C) + 2 max_probes_per_width + look_below + 1``
      for C candidates: the ladder, a bisection of its bracket, ``max_probes_per_width`` probes at each
      bracket end and the looks below it).
    max_probes_per_width: probes at one width (where p is near 1/2 no budget decides it).

    version: the rule's version (``search_rule`` = ``adaptive-v<version>``); it decides the default
      ``max_probes`` and is not among the stored ``rule_params`` (the record's ``search_rule`` holds it).

    ``adaptive-v1`` had ``max_probes_per_width = 4`` and a default ``max_probes = 3 ceil(log2 C) + 6``:
    it stopped with a third of its budget unspent whenever a bracket end had p near 1/2 (4 probes
    there), which cost recovery of w50 on wide transitions (benchmarks/search_cost.py, "unit 1..48, wide
    transition", 4 restarts: 0.83 -> 0.92-0.97 with v2, about 25% more trainings there).
    ``adaptive-v2`` is the current default; ``AdaptiveRule.v1()`` (or ``AdaptiveRule.named("adaptive-v1")``,
    what a spec's ``width.rule`` pins) gives the old rule, which reproduces its records.
    look_below: probes into unprobed gaps below a pinned bracket (robustness to a dip at a probed width).
    non_monotone_alpha: level of the test that flags a width significantly below a narrower one.
    """

    confidence: float = 0.9
    ladder_ratio: float = 2.0
    min_top_probes: int = 2
    max_probes: Optional[int] = None
    max_probes_per_width: int = 8
    look_below: int = 3
    non_monotone_alpha: float = 0.01
    version: int = 2

    def __post_init__(self):
        if isinstance(self.version, bool) or f"adaptive-v{self.version}" not in RULE_VERSIONS["adaptive"]:
            raise FTCInputError(f"version: {self.version!r} names none of {', '.join(RULE_VERSIONS['adaptive'])}")
        if not 0.5 < self.confidence < 1:
            raise FTCInputError(f"confidence: {self.confidence!r} must be in (0.5, 1)")
        for name in ("min_top_probes", "max_probes_per_width", "look_below"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FTCInputError(f"{name}: {v!r} must be an integer >= 1")
        if self.max_probes is not None and (isinstance(self.max_probes, bool) or not isinstance(self.max_probes, int)
                                            or self.max_probes < 1):
            raise FTCInputError(f"max_probes: {self.max_probes!r} must be an integer >= 1")
        if not self.ladder_ratio > 1:
            raise FTCInputError(f"ladder_ratio: {self.ladder_ratio!r} must exceed 1")
        if not 0 < self.non_monotone_alpha < 1:
            raise FTCInputError(f"non_monotone_alpha: {self.non_monotone_alpha!r} must be in (0, 1)")

    def probe_budget(self, num_candidates: int) -> int:
        if self.max_probes is not None:
            return self.max_probes
        if self.version == 1:
            return 3 * int(math.ceil(math.log2(max(num_candidates, 2)))) + 6
        return (2 * int(math.ceil(math.log2(max(num_candidates, 2)))) + 2 * self.max_probes_per_width
                + self.look_below + 1)

    @classmethod
    def v1(cls) -> "AdaptiveRule":
        """The rule ``adaptive-v1`` (to reproduce its records)."""
        return cls(max_probes_per_width=4, version=1)

    @classmethod
    def named(cls, search_rule: str) -> "AdaptiveRule":
        """The default parameters of a versioned adaptive rule, e.g. ``"adaptive-v1"``."""
        if search_rule not in RULE_VERSIONS["adaptive"]:
            raise FTCInputError(f"rule: unknown adaptive rule {search_rule!r}; choose one of "
                                f"{', '.join(RULE_VERSIONS['adaptive'])}")
        return cls.v1() if search_rule == "adaptive-v1" else cls()

    @property
    def name(self) -> str:
        """The ``search_rule`` string of records searched with this rule."""
        return f"adaptive-v{self.version}"

    def to_dict(self) -> dict:
        """The stored ``rule_params`` (the version is the record's ``search_rule``)."""
        out = dataclasses.asdict(self)
        del out["version"]
        return out


@dataclasses.dataclass(frozen=True)
class Trainability:
    """Monotone fit of p(w) from restart-level counts at the candidate widths, and what it implies.

    Arrays have shape ``(C,)`` over the candidates; unprobed widths have ``trials = 0`` and
    ``p_fit = NaN``. Widths are candidate values; ``None`` means "not identified".

    status: ``"measured"`` (some width has fitted p >= 1/2), ``"censored"`` (p(top) < 1/2 at
      ``confidence``, with enough trials at the top and at a narrower width) or ``"unresolved"``.
    w50: smallest probed width with fitted p >= 1/2 (the typical width).
    w50_bracket: ``(previous probed width or 0, w50)``: w50 lies in this half-open interval as far as
      the probes can tell (the interval-censored datum of a regression).
    w50_interval: ``(lo, hi)`` confidence statement: p(lo) < 1/2 and p(hi) >= 1/2 were each decided at
      ``confidence`` (lo = 0: nothing below was decided; hi = None: nothing was decided above). Each
      decision is at ``confidence`` per look; after the adaptive rule's repeated looks the interval holds
      the true w50 less often (0.66-0.93 on logistic p(w), mostly at the lower end:
      benchmarks/README.md), so it is not a calibrated joint interval.
    existence_width: smallest probed width with any success; ``existence_bracket`` its
      ``(previous probed width or 0, width)``; ``existence_trials_below``: failed trials at the probed
      widths below it; ``existence_p_below``: one-sided upper bound on p at the probed width just below.
    non_monotone_p: smallest one-sided Fisher exact p-value of "a wider width succeeds less often than a
      narrower one" over probed pairs; ``non_monotone`` when below the test level.
    """

    widths: np.ndarray
    successes: np.ndarray
    trials: np.ndarray
    p_fit: np.ndarray
    status: str
    w50: Optional[int]
    w50_bracket: Optional[tuple]
    w50_interval: Optional[tuple]
    existence_width: Optional[int]
    existence_bracket: Optional[tuple]
    existence_trials_below: int
    existence_p_below: Optional[float]
    non_monotone: bool
    non_monotone_p: float
    decided_above: np.ndarray
    decided_below: np.ndarray
    hi: Optional[int]  # candidate index of w50
    lo: int  # candidate index of the probed width just below w50 (-1: none)


def isotonic_fit(rates, weights) -> tuple:
    """Weighted least-squares non-decreasing fit (pool-adjacent-violators); rates, weights ``(n,)``.

    For Bernoulli counts (rates = successes / trials, weights = trials) this is the maximum-likelihood
    non-decreasing p. Returns ``(fit (n,), block (n,) int)``: fitted values and the pooled block of each point.
    """
    vals, wts, sizes = [], [], []
    for r, w in zip(np.asarray(rates, float), np.asarray(weights, float)):
        vals.append(r * w), wts.append(w), sizes.append(1)
        while len(vals) > 1 and vals[-2] / wts[-2] > vals[-1] / wts[-1]:
            v, w2, s = vals.pop(), wts.pop(), sizes.pop()
            vals[-1] += v
            wts[-1] += w2
            sizes[-1] += s
    fit = np.repeat([v / w for v, w in zip(vals, wts)], sizes)
    block = np.repeat(np.arange(len(sizes)), sizes)
    return fit, block


def cp_bounds(successes, trials, confidence: float) -> tuple:
    """One-sided Clopper-Pearson bounds ``(lower, upper)`` at ``confidence`` (arrays of equal shape)."""
    # The beta quantile is betaincinv (what scipy.stats.beta.ppf returns, bit for bit on every count
    # up to 200 trials); scipy.special alone imports in a third of scipy.stats' time, which every
    # sweep process paid (~1 s).
    from scipy.special import betaincinv  # host-side statistics only

    s = np.asarray(successes, float)
    n = np.asarray(trials, float)
    a = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = np.where(s > 0, betaincinv(np.maximum(s, 1e-300), n - s + 1, a), 0.0)
        upper = np.where(s < n, betaincinv(s + 1, np.maximum(n - s, 1e-300), 1 - a), 1.0)
    return lower, upper


def _hypergeom_sf(k: int, total: int, good: int, draws: int) -> float:
    """``P(X >= k)`` for ``X`` hypergeometric (``draws`` from ``total`` holding ``good``), exactly: a
    ratio of integers rounded once (counts of restarts are small)."""
    top = min(draws, good)
    num = sum(math.comb(good, x) * math.comb(total - good, draws - x) for x in range(max(k, 0), top + 1))
    return num / math.comb(total, draws)


def _fisher_drop(s, n) -> float:
    """Smallest one-sided Fisher exact p of 'p(w_j) < p(w_i)' over pairs i < j; s, n ``(k,)`` probed."""
    i, j = np.triu_indices(len(s), k=1)
    keep = s[i] * n[j] > s[j] * n[i]  # the narrower width succeeded more often
    if not keep.any():
        return 1.0
    i, j = i[keep], j[keep]
    # P(X >= s_i), X ~ hypergeometric: n_i draws from n_i + n_j trials holding s_i + s_j successes
    # (exact; scipy.stats.hypergeom.sf agrees to 1.1e-15 relative on every table up to 40 trials)
    return float(min(_hypergeom_sf(int(s[a]), int(n[a] + n[b]), int(s[a] + s[b]), int(n[a]))
                     for a, b in zip(i, j)))


def trainability(widths, successes, trials, *, confidence: float = 0.9, min_top_trials: int = 1,
                 non_monotone_alpha: float = 0.01) -> Trainability:
    """Fit p(w) for one instance and read off the typical and existence widths.

    Args:
      widths: ``(C,)`` sorted candidate widths.
      successes, trials: ``(C,)`` restart-level counts (0 trials: not probed).
      confidence: level of the one-sided decisions.
      min_top_trials: trials at the top width needed before censoring.
      non_monotone_alpha: level of the non-monotonicity test.

    Model: p(w) non-decreasing, fitted by isotonic regression (the Bernoulli MLE under monotonicity;
    ``p_fit``). Chosen over a logistic in log w because it assumes no shape (a sharp step, a plateau
    below 1, a wide transition are all common) and pools neighbouring widths only where the data
    agree. w50 is the first width where the isotonic fit of the widths *up to it* reaches 1/2, and a
    decision at a width uses the counts of the pooled block behind that value: under monotonicity this
    is the same transition, and failures at wider widths (a dip, a window of trainability) cannot move
    it; they are reported by the non-monotonicity test instead.
    """
    widths = np.asarray(widths)
    s = np.asarray(successes, float)
    n = np.asarray(trials, float)
    C = widths.shape[0]
    probed = np.flatnonzero(n > 0)
    p_fit = np.full(C, np.nan)
    first = np.full(C, np.nan)
    above = np.zeros(C, bool)
    below = np.zeros(C, bool)
    if probed.size:
        p_fit[probed] = isotonic_fit(s[probed] / n[probed], n[probed])[0]
        # Isotonic fit of the widths up to j, at j: max over i <= j of the pooled rate of [i, j].
        # Failures at wider widths (a dip, a window) cannot pull it down; the test below flags them.
        cs, cn = np.cumsum(s[probed]), np.cumsum(n[probed])
        for t, j in enumerate(probed):
            ps = cs[t] - np.concatenate([[0.0], cs[:t]])
            pn = cn[t] - np.concatenate([[0.0], cn[:t]])
            best = int(np.argmax(ps / pn))
            first[j] = ps[best] / pn[best]
            lo_b, up_b = cp_bounds(ps[best], pn[best], confidence)
            above[j] = lo_b >= 0.5
            below[j] = up_b < 0.5
    ok = probed[first[probed] >= 0.5] if probed.size else probed
    hi = int(ok[0]) if ok.size else None

    def prev_probed(j):
        lower = probed[probed < j]
        return int(lower[-1]) if lower.size else -1

    wv = lambda j: 0 if j < 0 else int(widths[j])
    top = C - 1
    if hi is not None:
        status = "measured"
        lo = prev_probed(hi)
        dec_hi = [j for j in probed if j >= hi and above[j]]
        dec_lo = [j for j in probed if j < hi and below[j]]
        w50_interval = (wv(dec_lo[-1]) if dec_lo else 0, int(widths[dec_hi[0]]) if dec_hi else None)
        w50, w50_bracket = int(widths[hi]), (wv(lo), int(widths[hi]))
    else:
        lo = top if n[top] > 0 else prev_probed(top)
        narrower = (n[:top] > 0).any() or C == 1
        status = "censored" if (n[top] >= min_top_trials and below[top] and narrower) else "unresolved"
        w50 = w50_bracket = w50_interval = None
    any_ok = probed[s[probed] > 0] if probed.size else probed
    if any_ok.size:
        e = int(any_ok[0])
        pe = prev_probed(e)
        e_width, e_bracket = int(widths[e]), (wv(pe), int(widths[e]))
        e_trials = int(n[probed[probed < e]].sum())
        e_p = None if pe < 0 else float(cp_bounds(0.0, n[pe], confidence)[1])
    else:
        e_width = e_bracket = e_p = None
        e_trials = int(n.sum())
    nm_p = _fisher_drop(s[probed], n[probed]) if probed.size > 1 else 1.0
    return Trainability(widths=widths, successes=s.astype(int), trials=n.astype(int), p_fit=p_fit,
                        status=status, w50=w50, w50_bracket=w50_bracket, w50_interval=w50_interval,
                        existence_width=e_width, existence_bracket=e_bracket, existence_trials_below=e_trials,
                        existence_p_below=e_p, non_monotone=nm_p < non_monotone_alpha, non_monotone_p=nm_p,
                        decided_above=above, decided_below=below, hi=hi, lo=lo)


def ladder_indices(widths, ratio: float = 2.0) -> list:
    """Candidate indices of the coarse pass: a geometric ladder (factor ``ratio``) from the smallest
    candidate to the largest, so any window of trainability wider than ``ratio`` holds a ladder width."""
    w = np.asarray(widths, float)
    C = w.shape[0]
    pos = w[w > 0]  # a rank-0 (no update) candidate is probed as itself; the ladder starts above it
    w0 = pos[0] if pos.size else 1.0
    steps = int(math.ceil(math.log(max(w[-1], w0) / w0) / math.log(ratio))) if C > 1 else 0
    targets = w0 * ratio ** np.arange(steps + 1)
    idx = {int(np.searchsorted(w, t, side="right")) - 1 for t in targets} | {0, C - 1}
    return sorted(i for i in idx if 0 <= i < C)


def _next_index(est: Trainability, probes_at: np.ndarray, rule: AdaptiveRule, looked_below: int = 0) -> Optional[int]:
    """Where one more probe informs most (None: the instance is done)."""
    top = probes_at.shape[0] - 1
    room = probes_at < rule.max_probes_per_width
    if est.hi is None:
        if est.status == "censored":
            return None
        if not (probes_at[:top] > 0).any() and top > 0:
            return top // 2  # censoring also needs a narrower width
        return top if room[top] else None
    hi, lo = est.hi, est.lo
    if hi - lo > 1:  # unprobed candidates between the bracket ends: bisect them
        return (lo + hi) // 2
    need = [j for j in ((hi,) if lo < 0 else (hi, lo))
            if room[j] and not (est.decided_above[j] if j == hi else est.decided_below[j])]
    if need:
        return min(need, key=lambda j: (probes_at[j], -j))
    # Pinned to one candidate step. Bisection trusts monotonicity: a dip at the probed width lo would
    # hide a transition below it. Bisect the unprobed gap just below lo (a few probes at most).
    if looked_below >= rule.look_below or lo < 0:
        return None
    below = np.flatnonzero(probes_at[:lo] > 0)
    start = int(below[-1]) if below.size else -1
    return None if lo - start <= 1 else (start + lo + 1) // 2


@dataclasses.dataclass
class WidthResult:
    """Outcome of the width search on one instance (see the module docstring for the rules).

    ``min_width``: the width a report fits: for ``adaptive`` the typical width w50 (or the existence
    width when ``min_width_is == "existence"``); for ``bisect``/``grid`` that rule's answer.
    ``censored``: the rule's censoring (``adaptive``: confident p(top) < 1/2). ``status``:
    ``measured``/``censored``/``unresolved`` (adaptive only: budget spent with p(top) near 1/2).
    The trainability fields (``w50`` ...) are computed from the probes for every rule; see
    :class:`Trainability`. ``p_fit``: {"widths", "successes", "trials", "p"} at the probed widths.
    """

    min_width: int | None
    censored: bool
    trivial: bool
    non_monotone: bool
    trainings: int
    strategy: str
    problem: dict
    probes: list  # of Probe, in the order they ran
    search_rule: str = ""
    min_width_is: str = ""
    status: str = ""
    w50: int | None = None
    w50_bracket: list | None = None
    w50_interval: list | None = None
    existence_width: int | None = None
    existence_bracket: list | None = None
    existence_trials_below: int = 0
    existence_p_below: float | None = None
    non_monotone_p: float = 1.0
    p_fit: dict = dataclasses.field(default_factory=dict)
    rule_params: dict = dataclasses.field(default_factory=dict)
    # The trained net at ``min_width`` (plain layers, see ``to_layers``) when asked for
    # (``return_params=True``); never stored in records.
    params: list | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)
             if f.name not in ("probes", "params")}
        d["probes"] = [p.to_dict() for p in self.probes]
        return d


def width_grid(lower: int, upper: int, step: int = 1) -> list:
    """Candidate widths ``lower, lower + step, ..., <= upper``, validated."""
    for name, v in (("lower", lower), ("upper", upper), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise FTCInputError(f"widths.{name}: {v!r} must be an integer >= 1")
    if lower > upper:
        raise FTCInputError(f"widths.lower: {lower} exceeds widths.upper = {upper}")
    return list(range(int(lower), int(upper) + 1, int(step)))


def _candidates(widths: Sequence[int], protocol: Protocol, form=None) -> np.ndarray:
    w = np.asarray(list(widths))
    if w.ndim != 1 or w.size == 0:
        raise FTCInputError(f"widths: {list(widths)!r} must be a non-empty list of integers")
    validate_widths(w, protocol, form=form)
    return np.unique(w.astype(np.int64))


@dataclasses.dataclass
class SearchOutcome:
    """What :func:`search_widths` found, lists of length ``num`` (``probes[i]`` in run order).

    ``estimates[i]``: the :class:`Trainability` fit from instance i's probes (every rule).
    ``min_width``/``censored``/``non_monotone``: the rule's answers (adaptive: w50, confident
    censoring, the non-monotonicity test).
    """

    min_width: list
    censored: list
    non_monotone: list
    probes: list
    estimates: list
    rule: str
    rule_params: dict


def _counts(probes_i: list, widths: np.ndarray) -> tuple:
    """Restart-level (successes, trials, probes) per candidate, ``(C,)`` each."""
    pos = {int(w): j for j, w in enumerate(widths)}
    s = np.zeros(widths.shape[0], int)
    n = np.zeros(widths.shape[0], int)
    k = np.zeros(widths.shape[0], int)
    for p in probes_i:
        j = pos[int(p.width)]
        s[j] += int(p.successes)
        n[j] += int(p.restarts)
        k[j] += 1
    return s, n, k


def search_widths(probe: Callable, num: int, widths: Sequence[int], strategy: str = DEFAULT_STRATEGY, *,
                  rule: Optional[AdaptiveRule] = None) -> SearchOutcome:
    """Run the lockstep search with any ``probe`` function (the kernel, or a synthetic trainer).

    Args:
      probe: ``probe(instances (n,) int, widths (n,) int, first_restart (n,) int) -> list of n``
        :class:`Probe`; a probe trains the instance's restarts ``first_restart ..`` at that width.
      num: number of instances.
      widths: sorted distinct candidate widths.
      strategy: ``"adaptive"`` (default), ``"bisect"`` or ``"grid"``.
      rule: parameters of the adaptive rule (default :class:`AdaptiveRule`()).

    Adaptive: round 0 probes the coarse ladder (:func:`ladder_indices`) of every instance in one call;
    every later round probes, per active instance, the one width where a probe informs most
    (:func:`_next_index`): bisection inside the bracket (previous probed width, w50], then more
    restarts at the two bracket ends until each is decided at the rule's confidence, more restarts at
    the top before censoring. It stops per instance when w50 is pinned to one candidate step with both
    ends decided, when censoring is confident, or when its probe budget is spent.
    """
    if strategy not in STRATEGIES:
        raise FTCInputError(f"strategy: unknown value {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    rule = rule or AdaptiveRule()
    widths = np.asarray(widths)
    C = widths.shape[0]
    probes = [[] for _ in range(num)]
    min_top_trials = 1

    def run(ids, idx):
        ids = np.asarray(ids, int)
        idx = np.asarray(idx, int)
        if len(set(zip(ids.tolist(), idx.tolist()))) != len(ids):
            raise AssertionError("a round probes each (instance, width) at most once")
        # the next probe of an instance at a width continues its restart sequence there
        first = np.array([sum(p.restarts for p in probes[i] if p.width == int(widths[j]))
                          for i, j in zip(ids, idx)], int)
        out = probe(ids, widths[idx], first)
        for i, p in zip(ids, out):
            probes[i].append(p)
        return [p.success for p in out]

    if strategy == "grid":
        run(np.repeat(np.arange(num), C), np.tile(np.arange(C), num))
        result, censored, nonmono = [], [], []
        for i in range(num):
            ok = np.array([p.success for p in probes[i]])
            first = int(np.argmax(ok)) if ok.any() else None
            result.append(None if first is None else int(widths[first]))
            censored.append(first is None)
            nonmono.append(first is not None and not ok[first:].all())
    elif strategy == "bisect":
        top = C - 1
        ok_top = run(list(range(num)), [top] * num)
        lo = np.zeros(num, int)
        hi = np.full(num, top)
        active = [i for i in range(num) if ok_top[i]]
        while True:
            active = [i for i in active if lo[i] < hi[i]]
            if not active:
                break
            mids = [(lo[i] + hi[i]) // 2 for i in active]
            for i, mid, ok in zip(active, mids, run(active, mids)):
                if ok:
                    hi[i] = mid
                else:
                    lo[i] = mid + 1
        result = [int(widths[hi[i]]) if ok_top[i] else None for i in range(num)]
        censored, nonmono = [not ok for ok in ok_top], [False] * num
    else:
        ladder = ladder_indices(widths, rule.ladder_ratio)
        run(np.repeat(np.arange(num), len(ladder)), np.tile(ladder, num))
        min_top_trials = rule.min_top_probes * max(1, probes[0][0].restarts) if num else 1
        budget = rule.probe_budget(C)
        active = list(range(num))
        looked = [0] * num
        while active:
            nxt = []
            for i in active:
                if len(probes[i]) >= budget:
                    continue
                s, n, k = _counts(probes[i], widths)
                est = trainability(widths, s, n, confidence=rule.confidence, min_top_trials=min_top_trials,
                                   non_monotone_alpha=rule.non_monotone_alpha)
                j = _next_index(est, k, rule, looked[i])
                if j is not None:
                    if est.hi is not None and est.hi - est.lo <= 1 and j < est.lo:
                        looked[i] += 1
                    nxt.append((i, j))
            active = [i for i, _ in nxt]
            if nxt:
                run([i for i, _ in nxt], [j for _, j in nxt])
        result = censored = nonmono = None
    estimates = []
    for i in range(num):
        s, n, _ = _counts(probes[i], widths)
        estimates.append(trainability(widths, s, n, confidence=rule.confidence, min_top_trials=min_top_trials,
                                      non_monotone_alpha=rule.non_monotone_alpha))
    if strategy == "adaptive":
        result = [e.w50 for e in estimates]
        censored = [e.status == "censored" for e in estimates]
        nonmono = [bool(e.non_monotone) for e in estimates]
    return SearchOutcome(min_width=result, censored=censored, non_monotone=nonmono, probes=probes,
                         estimates=estimates, rule=rule.name if strategy == "adaptive" else RULES[strategy],
                         rule_params=rule.to_dict() if strategy == "adaptive" else {})


@jax.jit
def _probe_lanes(problems: Problem, keys, lane_ids, lane_w, restart):
    """A probe's lanes: lane ``i`` is problem ``lane_ids[i]`` with the key of its (width, restart).

    One program per lane count (gathers and key folding are exact, so the bits are those of the
    eager ops, which compiled one program per leaf shape)."""
    lane_keys = jax.vmap(lambda k, w, r: jax.random.fold_in(jax.random.fold_in(k, w), r))(
        keys[lane_ids], lane_w, restart)
    return jax.tree.map(lambda a: a[lane_ids], problems), lane_keys


def _kernel_probe(problems: Problem, keys, protocol: Protocol, bucket: int, devices, form=None,
                  return_params: bool = False):
    R = protocol.restarts
    if protocol.train_seed:  # a reseeded run: same instances, new initialisations
        keys = jax.vmap(lambda k: jax.random.fold_in(k, protocol.train_seed))(keys)
    # Every round is padded to a multiple of one probe per instance (all instances x restarts): later
    # rounds reuse the compiled kernels instead of compiling new lane counts (measured on the default
    # sweep with bisection: cold 42 s -> 22 s with identical answers; warm 5.0 s -> 5.3 s).
    full = problems.x.shape[0] * R

    def probe(ids, ws, first_restart):
        lane_ids = np.repeat(ids, R)
        lane_w = np.repeat(ws, R).astype(np.int64)
        restart = (np.repeat(first_restart, R) + np.tile(np.arange(R), len(ids))).astype(np.int64)
        batch, lane_keys = _probe_lanes(problems, keys, jnp.asarray(lane_ids), jnp.asarray(lane_w, jnp.uint32),
                                        jnp.asarray(restart, jnp.uint32))
        res = fit_batch(batch, lane_w, keys=lane_keys, protocol=protocol, form=form, bucket=bucket,
                        devices=devices, pad_to=int(math.ceil(len(lane_ids) / full)) * full)
        out = []
        for j, w in enumerate(ws):
            s = slice(j * R, (j + 1) * R)
            n_ok = int(np.sum(res.success[s]))
            history = None
            if res.history is not None:
                history = dict(every=protocol.history_every,
                               mse=[[float(v) for v in h] for h in res.history[s, :, 0]],
                               max_err=[[float(v) for v in h] for h in res.history[s, :, 1]])
            params = None
            if return_params and n_ok:
                first = j * R + int(np.argmax(res.success[s]))
                params = form.trim(jax.tree.map(lambda a: a[first], res.params), int(w),
                                   depth=protocol.depth, split=protocol.split)
            out.append(Probe(
                width=int(w), success=n_ok >= protocol.min_successes, successes=n_ok, restarts=R,
                mse=[float(v) for v in res.mse[s]], max_err=[float(v) for v in res.max_err[s]],
                steps=[int(v) for v in res.steps[s]],
                passed={name: [bool(v) for v in res.passed[s, c]] for c, name in enumerate(criteria.CRITERIA)},
                first_restart=int(first_restart[j]),

                mse_end=[float(v) for v in res.mse_end[s]], max_err_end=[float(v) for v in res.max_err_end[s]],
                end_reason=[END_REASONS[int(v)] for v in res.end_reason[s]],
                weight_max=[[float(v) for v in row] for row in res.weight_max[s]],
                history=history, params=params))
        return out

    return probe


_trivially_satisfied = jax.jit(criteria.trivially_satisfied)  # one program, not ten eager ones


def _problem_summary(problems: Problem, protocol: Protocol) -> tuple:
    """Per-instance facts stored beside the search, and whether ``g = 0`` already decides success."""
    z = np.asarray(problems.z, dtype=np.float64)
    with jax.enable_x64(True):  # judge g = 0 in float64 whatever the training dtype
        flags = np.asarray(_trivially_satisfied(
            jnp.asarray(z), protocol.paper_threshold, protocol.tol, protocol.rel_eps))
    n_changed = np.asarray(problems.changed).sum(axis=1)
    fit = np.asarray(problems.f_fit_mse, dtype=np.float64)
    summaries = [dict(N=int(n_changed[i]), K=int(z.shape[1]), z_max=float(np.abs(z[i]).max()),
                      mse_zero=float(np.mean(z[i] ** 2)),
                      f_fit_mse=None if np.isnan(fit[i]) else float(fit[i]),
                      trivial_by=dict(zip(criteria.CRITERIA, (bool(v) for v in flags[i]))))
                 for i in range(z.shape[0])]
    return summaries, flags[:, criteria.criterion_index(protocol.criterion)]


def _check_protocol(protocol) -> None:
    if not isinstance(protocol, Protocol):
        hint = " (build one with ftcjax.Protocol(**your_dict))" if isinstance(protocol, dict) else ""
        raise FTCInputError(f"protocol: expected an ftcjax.Protocol, got {type(protocol).__name__}{hint}")


def _check_problems(name: str, problems, *, batched: bool) -> None:
    from ftcjax._src.lora import LoRAProblem

    if not isinstance(problems, (Problem, LoRAProblem)):
        raise FTCInputError(f"{name}: expected an ftcjax.Problem (see ftcjax.make_problem) or a "
                            f"LoRAProblem (ftcjax.make_lora_problem), got {type(problems).__name__}")
    shape = tuple(np.shape(problems.x))
    if batched and len(shape) != 3:
        raise FTCInputError(f"{name}: x has shape {shape}, one problem; min_width_batch needs a batch "
                            "x (n, K, d) (ftcjax.make_problems or ftcjax.stack_problems), or call min_width")
    if not batched and len(shape) != 2:
        raise FTCInputError(f"{name}: x has shape {shape}, a batch; min_width takes one problem x (K, d): "
                            "call min_width_batch for a batch")


def _is_single_key(keys) -> bool:
    if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
        return keys.ndim == 0
    return keys.ndim == 1  # a raw uint32 key (2,)


def min_width_batch(problems: Problem, *, keys, protocol: Protocol, widths: Sequence[int],
                    strategy: str = DEFAULT_STRATEGY, report: str = "typical",
                    rule: Optional[AdaptiveRule] = None, devices=None, form=None,
                    return_params: bool = False,
                    progress: Callable[[dict], None] | None = None) -> list:
    """Minimal trainable width (or LoRA rank: any form's size) of each problem in a batch.

    Args:
      problems: batch with leading axis ``(n,)``.
      keys: ``(n,)`` PRNG keys, one per instance (lane keys fold in width and restart).
      protocol: training protocol (restarts, criterion, ...).
      widths: candidate total widths (sorted and deduplicated here), e.g. :func:`width_grid`.
      strategy: ``"adaptive"`` (default; typical and existence widths from a monotone fit of p(w)),
        ``"bisect"`` (about ``1 + log2(len(widths))`` probes) or ``"grid"`` (every width).
      report: for ``adaptive``, which width is ``min_width``: ``"typical"`` (w50) or ``"existence"``.
      rule: adaptive-rule parameters (default :class:`AdaptiveRule`()).
      devices: devices to shard lanes over (default all local devices).
      form: the fine-tuning form (default additive; ``LoRA(...)`` searches the rank: ``widths`` then
        holds candidate ranks and ``min_width`` is the smallest trainable rank).
      return_params: keep the trained net at the minimal width in ``WidthResult.params`` (plain
        layers of the first successful restart; the host keeps one net per successful probe).
      progress: called after every search round with ``{"round", "probes", "instances", "trainings",
        "trainings_done"}`` (probes and distinct instances of that round, trainings in it and so far).
    Returns:
      list of ``n`` :class:`WidthResult`.
    """
    _check_protocol(protocol)
    _check_problems("problems", problems, batched=True)
    if report not in REPORT_WIDTHS:
        raise FTCInputError(f"report: unknown value {report!r}; choose one of {', '.join(REPORT_WIDTHS)}")
    from ftcjax._src import forms

    form = forms.single_form(form, default=forms.Additive())
    forms.check_problems(form, problems)
    cand = _candidates(widths, protocol, form)
    n = problems.x.shape[0]
    keys = jnp.asarray(keys)
    if _is_single_key(keys):
        raise FTCInputError(f"keys: got one key; min_width_batch needs one key per instance, shape ({n},): "
                            f"jax.random.split(key, {n})")
    if keys.shape[0] != n:
        raise FTCInputError(f"keys: need {n} keys (one per instance), got {keys.shape[0]}")
    # lanes_per_step = 0: fixed by this call's round size (n x restarts lanes) and the shapes, as a sweep's plan does
    protocol = protocol.replace(lanes_per_step=round_lanes_per_step(
        protocol, num_samples=problems.x.shape[1], in_dim=problems.x.shape[2], bucket=int(cand.max()),
        lanes_per_round=n * protocol.restarts, sized=isinstance(form, forms.Additive)))
    probe = _kernel_probe(problems, keys, protocol, int(cand.max()), devices, form, return_params)
    if progress is not None:
        probe = _reporting(probe, progress, protocol.restarts)
    found = search_widths(probe, n, cand, strategy, rule=rule)
    summaries, trivial = _problem_summary(problems, protocol)
    out = [result_from_search(found, i, strategy=strategy, report=report, trivial=bool(trivial[i]),
                              problem=summaries[i]) for i in range(n)]
    if return_params:
        for res in out:
            if res.min_width is not None:
                res.params = next((p.params for p in res.probes if p.width == res.min_width and p.params is not None),
                                  None)
    return out


def result_from_search(found: SearchOutcome, i: int, *, strategy: str, report: str = "typical",
                       trivial: bool = False, problem: Optional[dict] = None) -> WidthResult:
    """The :class:`WidthResult` of instance ``i`` of a :class:`SearchOutcome`."""
    e = found.estimates[i]
    probes = found.probes[i]
    mw, cens = found.min_width[i], found.censored[i]
    is_ = {"grid": "grid-smallest-success", "bisect": "bisect-transition"}.get(strategy, "w50")
    if strategy == "adaptive" and report == "existence":
        mw, cens, is_ = e.existence_width, e.existence_width is None and e.status == "censored", "existence"
    probed = e.trials > 0
    lst = lambda t: None if t is None else [None if v is None else int(v) for v in t]
    return WidthResult(
        min_width=mw, censored=bool(cens), trivial=trivial, non_monotone=bool(found.non_monotone[i]),
        trainings=int(sum(p.restarts for p in probes)), strategy=strategy, problem=problem or {},
        probes=probes, search_rule=found.rule, min_width_is=is_,
        status=e.status if strategy == "adaptive" else ("censored" if cens else "measured"),
        w50=e.w50, w50_bracket=lst(e.w50_bracket), w50_interval=lst(e.w50_interval),
        existence_width=e.existence_width, existence_bracket=lst(e.existence_bracket),
        existence_trials_below=int(e.existence_trials_below), existence_p_below=e.existence_p_below,
        non_monotone_p=float(e.non_monotone_p),
        p_fit={"widths": [int(w) for w in e.widths[probed]], "successes": [int(v) for v in e.successes[probed]],
               "trials": [int(v) for v in e.trials[probed]], "p": [float(v) for v in e.p_fit[probed]]},
        rule_params=dict(found.rule_params))


def _reporting(probe: Callable, progress: Callable[[dict], None], restarts: int) -> Callable:
    """``probe`` that calls ``progress`` after each round (one probe call is one search round)."""
    done = {"round": 0, "trainings_done": 0}

    def wrapped(ids, ws, *rest):
        out = probe(ids, ws, *rest)
        trainings = sum(int(p.restarts) for p in out)
        done["round"] += 1
        done["trainings_done"] += trainings
        progress({"round": done["round"], "probes": len(ids), "instances": len(set(np.asarray(ids).tolist())),
                  "trainings": trainings, "trainings_done": done["trainings_done"]})
        return out

    return wrapped


def min_width(problem: Problem, *, key, protocol: Protocol, widths: Sequence[int],
              strategy: str = DEFAULT_STRATEGY, report: str = "typical",
              rule: Optional[AdaptiveRule] = None, form=None, return_params: bool = False) -> WidthResult:
    """Minimal trainable width of one problem (see :func:`min_width_batch`)."""
    _check_protocol(protocol)
    _check_problems("problem", problem, batched=False)
    key = jnp.asarray(key)
    if not _is_single_key(key):
        raise FTCInputError(f"key: shape {key.shape} holds several keys; min_width takes one key")
    batch = jax.tree.map(lambda a: jnp.asarray(a)[None], problem)
    return min_width_batch(batch, keys=jnp.asarray(key)[None], protocol=protocol, widths=widths,
                           strategy=strategy, report=report, rule=rule, form=form,
                           return_params=return_params)[0]
