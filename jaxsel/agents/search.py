"""Search baselines with the agents' output type: random, greedy marginal gain, CLIMB-Disc, full.

Each returns a :class:`Found` (the best take, its pick order, its proxy score, and the number of
true proxy evaluations). Subsets are built the way the MDP builds them: picks (whole clusters,
or with ``quota`` > 0 a cluster's next ``quota`` rows, so a cluster can recur in an order) are
added until the running total of examples first reaches the budget, and the last one contributes
only the rows that fit (:func:`jaxsel.selection.take_for`); that take is what the proxy scores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import jax
import numpy as np

from jaxsel import metrics, progress
from jaxsel.agents import reward_model
from jaxsel.checkpoint import CheckpointMismatch, refusal, same_signature
from jaxsel.io import write_json
from jaxsel.proxy import RewardCache
from jaxsel.selection import ClassCaps, open_clusters, pick_rows, room, take_for


@dataclass
class Found:
    take: np.ndarray  # (K,) int32 rows taken per cluster
    order: list[int]
    score: float
    evaluations: int
    extra: dict = field(default_factory=dict)


@dataclass
class SearchLog:
    """The state of a round-based search, saved as JSON after every round so a stopped run resumes:
    every scored pick order, its true proxy score, the next round, and the numpy RNG state."""

    orders: list
    scores: list
    round: int
    rng_state: dict
    signature: str = ""
    jaxsel_version: str | None = None  # the jaxsel that saved it (None: one older than 2026-12-06)

    def save(self, path: Path) -> None:
        from jaxsel import code_version
        write_json(path, {**asdict(self), "jaxsel_version": code_version()})

    @classmethod
    def resume(cls, path: Path | None, signature: str) -> "SearchLog | None":
        """The saved log at ``path`` (None if there is none); refuses one written by another run."""
        if path is None or not Path(path).exists():
            return None
        try:
            log = cls(**json.loads(Path(path).read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as e:
            raise CheckpointMismatch(f"{path}: not a readable search checkpoint ({type(e).__name__})")
        if not same_signature(log.signature, signature):
            raise refusal(f"search checkpoint {path}", log.signature, signature, log.jaxsel_version)
        return replace(log, signature=signature)  # saved on as this run signs it


def _start(log_path, signature, seed, cache, sizes, budget, n, resume, quota: int = 0, caps: ClassCaps | None = None):
    """(log, rng): resumed from ``log_path``, or ``n`` freshly scored budget-matched random orders."""
    log = SearchLog.resume(log_path, signature) if resume else None
    rng = np.random.default_rng(seed)
    if log is not None:
        rng.bit_generator.state = log.rng_state
        return log, rng
    orders = [complete([], sizes, budget, rng, quota, caps) for _ in range(n)]
    scores = [float(v) for v in cache.scores(takes(orders, sizes, budget, quota, caps))]
    return SearchLog(orders, scores, 0, rng.bit_generator.state, signature), rng


def _advance(log: SearchLog, new: list, cache: RewardCache, rng, sizes: np.ndarray, budget: int, log_path,
             quota: int = 0, caps: ClassCaps | None = None) -> None:
    """Score ``new`` orders with the true proxy, append them, move to the next round, save."""
    log.scores += [float(v) for v in cache.scores(takes(new, sizes, budget, quota, caps))]
    log.orders += new
    log.round += 1
    log.rng_state = rng.bit_generator.state
    if log_path is not None:
        log.save(Path(log_path))


def complete(order: list[int], sizes: np.ndarray, budget: int, rng: np.random.Generator, quota: int = 0,
             caps: ClassCaps | None = None) -> list[int]:
    """Extend a pick order with random picks until the budget is first reached: unchosen clusters
    (whole clusters), or clusters not yet exhausted, uniformly (``quota`` > 0); with ``caps``,
    only clusters whose class has room."""
    order = list(order)
    taken = take_for(order, sizes, int(np.sum(sizes)), quota, caps)
    total = int(taken.sum())
    if quota == 0:
        for c in rng.permutation(open_clusters(sizes, taken)):
            if total >= budget:
                break
            fits = int(room(taken, budget, caps)[c])
            if fits > 0:
                order.append(int(c))
                taken[c] = min(int(sizes[c]), fits)
                total += int(taken[c])
        return order
    while total < budget and len(opened := open_clusters(sizes, taken, quota, caps)):
        c = int(rng.choice(opened))
        step = int(pick_rows(sizes[c], taken[c], room(taken, budget, caps)[c], quota))
        order.append(c)
        taken[c] += step
        total += step
    return order


def takes(orders: list, sizes: np.ndarray, budget: int, quota: int = 0, caps: ClassCaps | None = None) -> np.ndarray:
    """(B, K) int32: the take of each pick order under the exact budget rule."""
    return np.stack([take_for(o, sizes, budget, quota, caps) for o in orders])


def random_search(cache: RewardCache, sizes: np.ndarray, budget: int, samples: int, seed: int,
                  quota: int = 0, caps: ClassCaps | None = None) -> Found:
    """Score ``samples`` budget-matched random subsets; best one, plus mean and std of all."""
    rng = np.random.default_rng(seed)
    orders = [complete([], sizes, budget, rng, quota, caps) for _ in range(samples)]
    found = takes(orders, sizes, budget, quota, caps)
    scores = cache.scores(found)
    i = int(np.argmax(scores))
    return Found(found[i], orders[i], float(scores[i]), samples,
                 {"mean": float(scores.mean()), "std": float(scores.std()), "first": float(scores[0]),
                  "first_order": orders[0]})


def greedy(cache: RewardCache, sizes: np.ndarray, budget: int, quota: int = 0, *,
           caps: ClassCaps | None = None, progress_bar: bool = True) -> Found:
    """Take the pick (a whole cluster, or a cluster's next ``quota`` rows) with the largest
    marginal gain each step, all candidates scored as one batch; a pick that would overshoot the
    budget is scored for the rows of it that fit."""
    k = len(sizes)
    order, take, evals, score = [], np.zeros(k, np.int32), 0, float("nan")
    with progress.bar(total=budget, desc="greedy", unit="ex", leave=False, disable=not progress_bar) as bar:
        while take.sum() < budget and len(rest := open_clusters(sizes, take, quota, caps)):
            step = pick_rows(sizes[rest], take[rest], room(take, budget, caps)[rest], quota).astype(np.int32)
            s = cache.pick_scores(take, rest, step)
            evals += len(rest)
            j = int(np.argmax(s))
            order.append(int(rest[j]))
            take, score = take.copy(), float(s[j])
            take[rest[j]] += step[j]
            bar.update(int(step[j]))
    return Found(take, order, score, evals)


def _mutate(order: list[int], sizes: np.ndarray, budget: int, rng: np.random.Generator, quota: int = 0,
            caps: ClassCaps | None = None) -> list[int]:
    """Swap one pick for a pick of another cluster (unchosen; with ``quota``, not exhausted; with
    ``caps``, of a class with room), drop the picks the budget no longer needs, then re-complete
    to the budget."""
    order = list(order)
    order.pop(int(rng.integers(len(order))))
    taken = take_for(order, sizes, int(np.sum(sizes)), quota, caps)
    opened = open_clusters(sizes, taken, quota, caps)  # empty when a trimmed pick of the class grew back
    if len(opened):
        order.append(int(rng.choice(opened)))
    while len(order) > 1 and take_for(order[1:], sizes, budget, quota, caps).sum() >= budget:  # drop surplus picks
        order.pop(0)
    return complete(order, sizes, budget, rng, quota, caps)


def climb(cache: RewardCache, sizes: np.ndarray, budget: int, *, rounds: int = 4, init: int = 256,
          candidates: int = 2048, evaluate: int = 128, top: int = 16, seed: int = 0,
          model_cfg: reward_model.RewardModelConfig = reward_model.RewardModelConfig(),
          log_path: Path | None = None, resume: bool = False, signature: str = "",
          stop_after: int | None = None, quota: int = 0, caps: ClassCaps | None = None,
          progress_bar: bool = True) -> Found:
    """CLIMB-Disc: score random masks, fit the reward model, propose mutations of the best masks,
    evaluate the ones the model ranks highest (mean + std), refit, and repeat with a shrinking
    number of evaluations. With ``log_path`` the state is saved after every round (``resume``)."""
    log, rng = _start(log_path, signature, seed, cache, sizes, budget, init, resume, quota, caps)
    key = jax.random.PRNGKey(seed)
    for r in progress.bar(range(log.round, rounds if stop_after is None else min(stop_after, rounds)), desc="climb",
                          leave=False, disable=not progress_bar):
        model = reward_model.fit(jax.random.fold_in(key, r),
                                 reward_model.coverage(takes(log.orders, sizes, budget, quota, caps), sizes),
                                 np.array(log.scores), model_cfg)
        best = np.argsort(log.scores)[::-1][:top]
        props = [_mutate(log.orders[best[i % len(best)]], sizes, budget, rng, quota, caps) for i in range(candidates)]
        cover = reward_model.coverage(takes(props, sizes, budget, quota, caps), sizes)
        mean, std = map(np.asarray, reward_model.predict(model, cover))
        pick = np.argsort(mean + std)[::-1][:max(8, evaluate >> r)]
        _advance(log, [props[i] for i in pick], cache, rng, sizes, budget, log_path, quota, caps)
        metrics.log("climb", r + 1, best_score=max(log.scores), evaluations=len(log.orders))
    i = int(np.argmax(log.scores))
    return Found(take_for(log.orders[i], sizes, budget, quota, caps), log.orders[i], float(log.scores[i]),
                 len(log.orders))


def full(cache: RewardCache, sizes: np.ndarray) -> Found:
    """All clusters (the full training set)."""
    take = np.asarray(sizes, np.int32)
    return Found(take, list(range(len(take))), float(cache.scores(take[None])[0]), 1)
