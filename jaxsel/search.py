"""Search baselines with the agents' output type: random, greedy marginal gain, CLIMB-Disc, full.

Each returns a :class:`Found` (the best mask, its pick order, its proxy score, and the number of
true proxy evaluations). Masks are built the way the MDP builds them: clusters are added until
the running total of examples first reaches the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxsel import reward_model
from jaxsel.proxy import RewardCache


@dataclass
class Found:
    mask: np.ndarray
    order: list[int]
    score: float
    evaluations: int
    extra: dict = field(default_factory=dict)


def complete(order: list[int], sizes: np.ndarray, budget: int, rng: np.random.Generator) -> list[int]:
    """Extend a pick order with random unchosen clusters until the budget is first reached."""
    order = list(order)
    total = int(sizes[order].sum()) if order else 0
    if total >= budget:
        return order
    rest = rng.permutation(np.setdiff1d(np.arange(len(sizes)), order))
    for c in rest:
        order.append(int(c))
        total += int(sizes[c])
        if total >= budget:
            break
    return order


def to_mask(order: list[int], k: int) -> np.ndarray:
    m = np.zeros(k, bool)
    m[order] = True
    return m


def random_search(cache: RewardCache, sizes: np.ndarray, budget: int, samples: int, seed: int) -> Found:
    """Score ``samples`` budget-matched random subsets; best one, plus mean and std of all."""
    rng = np.random.default_rng(seed)
    orders = [complete([], sizes, budget, rng) for _ in range(samples)]
    scores = cache.scores(np.stack([to_mask(o, len(sizes)) for o in orders]))
    i = int(np.argmax(scores))
    return Found(to_mask(orders[i], len(sizes)), orders[i], float(scores[i]), samples,
                 {"mean": float(scores.mean()), "std": float(scores.std()), "first": float(scores[0]),
                  "first_order": orders[0]})


def greedy(cache: RewardCache, sizes: np.ndarray, budget: int) -> Found:
    """Add the cluster with the largest marginal gain (all remaining scored as one batch) each step."""
    k = len(sizes)
    order, total, evals, score = [], 0, 0, float("nan")
    with tqdm(total=budget, desc="greedy", unit="ex", leave=False) as bar:
        while total < budget and len(order) < k:
            rest = np.setdiff1d(np.arange(k), order)
            cands = np.repeat(to_mask(order, k)[None], len(rest), 0)
            cands[np.arange(len(rest)), rest] = True
            s = cache.scores(cands)
            evals += len(rest)
            j = int(np.argmax(s))
            order.append(int(rest[j]))
            score = float(s[j])
            total += int(sizes[rest[j]])
            bar.update(int(sizes[rest[j]]))
    return Found(to_mask(order, k), order, score, evals)


def _mutate(order: list[int], sizes: np.ndarray, budget: int, rng: np.random.Generator) -> list[int]:
    """Swap one chosen cluster for an unchosen one, then re-complete to the budget."""
    order = list(order)
    order.pop(int(rng.integers(len(order))))
    rest = np.setdiff1d(np.arange(len(sizes)), order)
    order.append(int(rng.choice(rest)))
    while len(order) > 1 and sizes[order[:-1]].sum() >= budget:  # drop surplus picks
        order.pop(0)
    return complete(order, sizes, budget, rng)


def climb(cache: RewardCache, sizes: np.ndarray, budget: int, *, rounds: int = 4, init: int = 256,
          candidates: int = 2048, evaluate: int = 128, top: int = 16, seed: int = 0,
          model_cfg: reward_model.RewardModelConfig = reward_model.RewardModelConfig()) -> Found:
    """CLIMB-Disc: score random masks, fit the reward model, propose mutations of the best masks,
    evaluate the ones the model ranks highest (mean + std), refit, and repeat with a shrinking
    number of evaluations."""
    rng = np.random.default_rng(seed)
    k = len(sizes)
    orders = [complete([], sizes, budget, rng) for _ in range(init)]
    scores = list(cache.scores(np.stack([to_mask(o, k) for o in orders])))
    key = jax.random.PRNGKey(seed)
    for r in tqdm(range(rounds), desc="climb", leave=False):
        model = reward_model.fit(jax.random.fold_in(key, r), np.stack([to_mask(o, k) for o in orders]),
                                 np.array(scores), model_cfg)
        best = np.argsort(scores)[::-1][:top]
        props = [_mutate(orders[best[i % len(best)]], sizes, budget, rng) for i in range(candidates)]
        mean, std = map(np.asarray, reward_model.predict(model, np.stack([to_mask(o, k) for o in props])))
        n_eval = max(8, evaluate >> r)
        pick = np.argsort(mean + std)[::-1][:n_eval]
        new = [props[i] for i in pick]
        scores += list(cache.scores(np.stack([to_mask(o, k) for o in new])))
        orders += new
    i = int(np.argmax(scores))
    return Found(to_mask(orders[i], k), orders[i], float(scores[i]), len(orders))


def full(cache: RewardCache, k: int) -> Found:
    """All clusters (the full training set)."""
    m = np.ones(k, bool)
    return Found(m, list(range(k)), float(cache.scores(m[None])[0]), 1)
