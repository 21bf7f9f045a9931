"""Do the searches find better subsets, or subsets that fit the scored rows? No finetuning.

    python bench/overfit.py [--config configs/rotten_tomatoes-cpu] [--seeds 0 1 2] [--quick]
    python bench/overfit.py --config configs/tweets-cpu-pool --searches greedy,ppo --ppo-lrs 3e-4,3e-3 \
        --granularities quota --score-on validation+train --rl-steps 100000   # PPO's learning rate
    python bench/overfit.py --searches ppo --networks early,late --seeds 0 1 2 3 4   # the agents' networks
    python bench/overfit.py --searches ppo --preference-rates 0,64 --seeds 0 1 2 3 4   # per-cluster preferences

The config's validation cap (``max_validation``) leaves most of the validation split unused: those
rows are held out here. Every subset (5% of the pool) is scored by the same ridge proxy twice: on
the rows the search maximised (``reward``) and on the held-out rows no method saw (``held-out``).
A search that only fits its scored rows shows a high reward and a held-out score at or below
``stratified``'s. Each search runs with the proxy scoring the capped validation rows
(``score_on = "validation"``) and with the pool's own unflagged rows added
(``"validation+train"``). The held-out score is always the validation-only proxy's view, so the two
are compared on the same rows. Seeds pair the methods; intervals are 95% Student-t over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402
from common import entry, report  # noqa: E402

from jaxsel import agents, baselines, data, embed, label_issues, proxy  # noqa: E402
from jaxsel.config import load_config  # noqa: E402
from jaxsel.errors import JaxselError  # noqa: E402
from jaxsel.experiment import Run  # noqa: E402
from jaxsel.experiment.report import mean_ci  # noqa: E402
from jaxsel.selection import budget_examples  # noqa: E402


def held_out(cfg, dd) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, labels) of the validation rows the config's cap left out (matched by text)."""
    whole = data.load(cfg.data.name, text_col=cfg.data.text_col, label_col=cfg.data.label_col,
                      split_col=cfg.data.split_col)
    used = set(dd["validation"]["text"])
    rest = [i for i, t in enumerate(whole["validation"]["text"]) if t not in used]
    if len(rest) < 100:
        raise JaxselError(f"{cfg.name}: only {len(rest)} validation rows are left out by max_validation; "
                          "this benchmark needs a config that caps the validation split")
    texts = [whole["validation"]["text"][i] for i in rest]
    x = embed.encode(texts, cfg.embed.model, max_length=cfg.embed.max_length, progress=False)
    return x, np.asarray(whole["validation"]["label"])[rest]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/rotten_tomatoes-cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", type=float, default=0.05)
    ap.add_argument("--quick", action="store_true", help="one seed, greedy only")
    ap.add_argument("--searches", default="greedy,climb", help="comma-separated search methods")
    ap.add_argument("--ppo-lrs", default=None, help="with ppo among the searches: its learning rates, e.g. 3e-4,3e-3")
    ap.add_argument("--networks", default=None, help="with ppo or dqn among the searches: their networks, e.g. "
                    "early,late (jaxsel.agents.networks)")
    ap.add_argument("--preference-rates", default=None, help="with ppo or dqn among the searches: their "
                    "preference_rate values, e.g. 0,64 (jaxsel.agents.networks.preference_rate)")
    ap.add_argument("--granularities", default="cluster,quota")
    ap.add_argument("--rl-steps", type=int, default=None, help="PPO/DQN environment steps (default: the config's)")
    ap.add_argument("--score-on", default="validation,validation+train", help="the proxies' scored rows")
    a = ap.parse_args()
    cfg = load_config(a.config)
    seeds = a.seeds[:1] if a.quick else a.seeds
    searches = ["greedy"] if a.quick else a.searches.split(",")
    lrs = [float(v) for v in a.ppo_lrs.split(",")] if a.ppo_lrs else [None]
    nets = a.networks.split(",") if a.networks else [None]
    prefs = [float(v) for v in a.preference_rates.split(",")] if a.preference_rates else [None]
    agent = ("ppo", "dqn")  # the searches with a network
    variants = [(m, lr, net, pref) for m in searches for lr in (lrs if m == "ppo" else [None])
                for net in (nets if m in agent else [None]) for pref in (prefs if m in agent else [None])]
    run = Run(cfg, Path("runs") / "bench-overfit" / cfg.name, progress=False)
    dd = run.dataset()
    emb = run.embeddings(dd)
    c = run.clustering(dd, emb)
    hx, hy = held_out(cfg, dd)
    y, vx, vy = np.asarray(dd["train"]["label"]), emb["validation"], np.asarray(dd["validation"]["label"])
    proxies = {s: proxy.make(emb["train"], y, c, vx, vy, dataclasses.replace(cfg.proxy, score_on=s))
               for s in ("validation", "validation+train")}  # the held-out and reward views need both
    judge = proxy.make(emb["train"], y, c, hx, hy, cfg.proxy)
    flagged = label_issues.find(proxies["validation"], y, c.assignment)
    n = budget_examples(a.budget, len(y))
    steps = a.rl_steps or cfg.select.rl_steps  # the RL agents' env steps
    rows, seconds = [], {}
    for seed in seeds:
        picks = {m: baselines.indices(m, n, seed, labels=y, clustering=c, x=emb["train"], issues=flagged)
                 for m in ("stratified", "cleanlab")}
        for score_on in a.score_on.split(","):
            for gran in a.granularities.split(","):
                for m, lr, net, pref in variants:
                    asked = {**({} if net is None else {"network": net}),  # over the config's own tables
                             **({} if pref is None else {"preference_rate": pref})}
                    ppo_cfg = agents.agent_config("ppo", steps, {**cfg.select.ppo, **asked,
                                                                 **({} if lr is None else {"lr": lr})})
                    dqn_cfg = agents.agent_config("dqn", steps, {**cfg.select.dqn, **asked})
                    t = time.perf_counter()
                    sel = agents.select(proxies[score_on], c, y, agents.SelectConfig(
                        method=m, budget=a.budget, seed=seed, granularity=gran, ppo=ppo_cfg, dqn=dqn_cfg),
                        progress=False)
                    name = (f"{m}{'' if lr is None else f' lr={lr:g}'}{'' if net is None else f' {net}'}"
                            f"{'' if pref is None else f' pref={pref:g}'}/{gran} on {score_on}")
                    picks[name], seconds[name, seed] = sel.indices, time.perf_counter() - t
        for name, idx in picks.items():
            rows.append({"method": name, "seed": seed, "reward": float(proxies["validation"].score_rows(idx).accuracy),
                         "reward_pool": float(proxies["validation+train"].score_rows(idx).accuracy),
                         "held_out": float(judge.score_rows(idx).accuracy), "seconds": seconds.get((name, seed))})
        print(f"seed {seed} done", file=sys.stderr, flush=True)
    table, ref = [], {r["seed"]: r["held_out"] for r in rows if r["method"] == "stratified"}
    for name in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == name]
        row = {"method": name, "seeds": len(rs), "scored rows (validation)": np.mean([r["reward"] for r in rs]),
               "scored rows (+pool)": np.mean([r["reward_pool"] for r in rs]),
               "held-out": np.mean([r["held_out"] for r in rs]),
               "seconds": np.mean([r["seconds"] for r in rs]) if rs[0]["seconds"] is not None else None}
        if name != "stratified" and len(rs) > 1:
            m, h = mean_ci([r["held_out"] - ref[r["seed"]] for r in rs])
            row["held-out vs stratified"] = f"{m:+.3f} ± {h:.3f}"
        table.append(row)
    best = max((r for r in table if "/" in r["method"]), key=lambda r: r["held-out"])
    summary = {"config": cfg.name, "budget": a.budget, "seeds": seeds, "held_out_rows": int(len(hy)),
               "validation_rows": int(len(vy)), "pool_rows_scored": int(proxies["validation+train"].yv.shape[0] - len(vy)),
               "stratified_held_out": float(np.mean(list(ref.values()))), "best_search": best["method"],
               "best_search_held_out": float(best["held-out"]), "per_seed": rows}
    tag = ("-networks" if a.networks else "") + ("-preferences" if a.preference_rates else "") + (
        f"-steps{a.rl_steps}" if a.rl_steps else "")
    report(f"overfit-{cfg.name}{tag}", table,
           ["method", "seeds", "scored rows (validation)", "scored rows (+pool)", "held-out", "held-out vs stratified",
            "seconds"],
           summary, a.quick)


if __name__ == "__main__":
    entry(main)
