"""Cost of every stage of a jaxsel run against the number of rows N and of clusters K.

    python bench/scaling.py [--quick] [--ns 1000,10000,100000,1000000] [--ks 100,1024,4096] [--extend EARLIER.json]

Synthetic tweets-shaped embeddings (d=384, 3 classes, Gaussian blobs; ``bench/proxy.py``'s
generator) stand in for real ones, so N can reach millions. Measured per (N, K), K <= N/10:
k-means (jaxsel's Lloyd, k-means++ seeding, ``--iters`` iterations), proxy preparation (PCA to 64
dimensions + per-chunk ridge statistics for quota picks), greedy selection of 5% over quota picks
(budget / 32 rows per pick; a second call, compilation excluded), and PPO's environment steps/s
on that MDP (64 envs, 2 updates after compilation) turned into the seconds of 100,000 steps. Two stages are linear in the rows they
touch and are measured once and extrapolated (marked ``extrapolated``): MiniLM embedding
(texts/s on 512 real tweets at 64 tokens) for N texts, and the MiniLM finetune of a 5% subset
under the fair protocol (max(2 epochs, 100 steps of 16) examples, s/example from a short
finetune). Writes a table, ``bench/results/scaling-BACKEND[-quick].json`` and a log-log plot
``bench/results/scaling-BACKEND[-quick].png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import jax  # noqa: E402
import numpy as np  # noqa: E402
from common import RESULTS, count, counts, entry, report  # noqa: E402
from proxy import synthetic  # noqa: E402

from jaxsel import agents, cluster, data, embed, finetune  # noqa: E402
from jaxsel import proxy as proxy_mod  # noqa: E402
from jaxsel.agents import ppo  # noqa: E402
from jaxsel.agents.env import make_env  # noqa: E402

BUDGET, HORIZON = 0.05, 32


def seconds(fn) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def linear_rates() -> dict:
    """MiniLM embedding texts/s and finetuning seconds per example, measured on real tweets."""
    texts, labels, names, (train, val, test), *_ = data.split("tweets")
    sample = [texts[i] for i in train[:512]]
    embed.encode(sample[:128], max_length=64, progress=False)  # load and compile the common buckets
    embed_s = seconds(lambda: embed.encode(sample, max_length=64, progress=False))
    full = data.load("tweets")
    dd = data.derive(full, {"validation": np.arange(64), "test": np.arange(64)}, tag="scaling-bench")
    cfg = finetune.FinetuneConfig(model="minilm", epochs=1, batch_size=16, max_length=64, max_steps=8)
    finetune.finetune(dd, np.arange(128), cfg, progress=False)  # compile
    m = finetune.finetune(dd, np.arange(128), cfg, progress=False)
    return {"embed_texts_per_s": len(sample) / embed_s, "finetune_s_per_example": m["train_seconds"] / m["examples_seen"]}


def ppo_seconds_per_100k(p, cl, y) -> float:
    env, params = make_env(p, cl, y, BUDGET, quota=max(1, int(BUDGET * len(y)) // HORIZON))
    cfg = ppo.PPOConfig(num_envs=64, num_steps=16, total_timesteps=64 * 16 * 2)
    fns = ppo.make_chunks(cfg, env)
    r0 = jax.jit(fns.init)(jax.random.PRNGKey(0), params)
    update = jax.jit(fns.update)
    jax.block_until_ready(update(r0, 2, params))  # compile
    return seconds(lambda: update(r0, 2, params)) / (2 * 64 * 16) * 100_000


def greedy_step_seconds(p, cl, n: int) -> tuple[float, float]:
    """Seconds to score one greedy step's candidates (every cluster's first quota chunk), best of 3
    after compilation: the ridge proxy's own path (the take's statistics once, plus each pick's
    rows) and the general one it replaced (every candidate's chunk statistics summed from scratch),
    side by side on the same proxy."""
    from jaxsel.proxy.base import Proxy
    quota = max(1, int(BUDGET * n) // HORIZON)
    pq = p.with_quota(quota).with_partial_cap(quota)
    take = np.zeros(cl.k, np.int32)
    clusters = np.arange(cl.k, dtype=np.int32)
    counts = np.minimum(quota, np.asarray(cl.sizes)).astype(np.int32)
    out = []
    for fn in (pq.score_picks, lambda *args: Proxy.score_picks(pq, *args)):
        fn(take, clusters, counts)  # compile
        out.append(min(seconds(lambda: fn(take, clusters, counts).accuracy) for _ in range(3)))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N up to 100k, K up to 1,024, 3 k-means iterations")
    ap.add_argument("--ns", type=counts(1), default=None, help="comma-separated row counts")
    ap.add_argument("--ks", type=counts(1), default=None, help="comma-separated cluster counts")
    ap.add_argument("--iters", type=count(1), default=None, help="k-means Lloyd iterations (default 10; quick 3)")
    ap.add_argument("--extend", type=Path, default=None,
                    help="an earlier results JSON of this script: its rows join this run's table, plot and file "
                         "(a row of the same N, K and stage measured now replaces it), so the grid can be "
                         "measured in parts")
    a = ap.parse_args()
    ns = a.ns or ([1_000, 10_000, 100_000] if a.quick else [1_000, 10_000, 100_000, 1_000_000])
    ks = a.ks or ([100, 1024] if a.quick else [100, 1024, 4096])
    iters = a.iters or (3 if a.quick else 10)
    rates = linear_rates()
    print(rates, file=sys.stderr)
    xv, yv = synthetic(2_000, 384, 3, 1)
    rows = []
    for n in ns:
        x, y = synthetic(n, 384, 3, 0)
        examples = int(BUDGET * n)
        rows.append({"N": n, "K": "-", "stage": "embed (MiniLM)", "seconds": n / rates["embed_texts_per_s"],
                     "how": "extrapolated"})
        seen = max(2 * examples, 100 * 16)
        rows.append({"N": n, "K": "-", "stage": "finetune 5% (MiniLM)", "seconds": seen * rates["finetune_s_per_example"],
                     "how": "extrapolated"})
        for k in ks:
            if k > n // 10:
                continue
            t = time.perf_counter()
            cl = cluster.kmeans(x, k, max_iter=iters, tol=0.0)
            rows.append({"N": n, "K": k, "stage": f"k-means ({iters} it)", "seconds": time.perf_counter() - t,
                         "how": "measured"})
            t = time.perf_counter()
            p = proxy_mod.make(x, y, cl, xv, yv, proxy_mod.ProxyConfig(project=64))
            rows.append({"N": n, "K": k, "stage": "proxy preparation", "seconds": time.perf_counter() - t,
                         "how": "measured"})
            greedy = agents.SelectConfig(method="greedy", budget=BUDGET, granularity="quota", horizon=HORIZON)
            agents.select(p, cl, y, greedy, progress=False)  # compile
            t = time.perf_counter()
            agents.select(p, cl, y, greedy, progress=False)
            rows.append({"N": n, "K": k, "stage": "greedy selection", "seconds": time.perf_counter() - t,
                         "how": "measured"})
            fast, general = greedy_step_seconds(p, cl, n)
            rows += [{"N": n, "K": k, "stage": "greedy step: ridge pick scores", "seconds": fast, "how": "measured"},
                     {"N": n, "K": k, "stage": "greedy step: per-candidate sums (before)", "seconds": general,
                      "how": "measured", "ratio": general / fast}]
            rows.append({"N": n, "K": k, "stage": f"PPO, 100k env steps, {ppo.PPOConfig().network} network",
                         "seconds": ppo_seconds_per_100k(p, cl, y),
                         "how": "from steps/s"})
            print(rows[-6:], file=sys.stderr)
    if a.extend is not None:
        rows = extend(rows, a.extend)
        ns = sorted({r["N"] for r in rows})
    tag = f"scaling-{jax.default_backend()}{'-quick' if a.quick else ''}"
    plot(rows, RESULTS / f"{tag}.png")
    top_k = max([r["K"] for r in rows if r["N"] == max(ns) and r["K"] != "-"], default=None)
    summary = {"largest_n": max(ns), "k_at_largest_n": top_k, **rates,
               "seconds_at_largest": {r["stage"]: r["seconds"] for r in rows if r["N"] == max(ns) and r["K"] in ("-", top_k)}}
    ratio = next((r["ratio"] for r in rows if r["N"] == max(ns) and r["K"] == top_k and "ratio" in r), None)
    if ratio is not None:
        summary["greedy_step_vs_per_candidate_sums"] = ratio
    report("scaling", rows, ["N", "K", "stage", "seconds", "how", "ratio", "source"], summary, a.quick)


def extend(rows: list[dict], path: Path) -> list[dict]:
    """``rows`` plus the rows of an earlier results file not measured again (same N, K, stage), each
    marked with the file it came from; sorted by N, then K."""
    new = {(r["N"], r["K"], r["stage"]) for r in rows}
    kept = [{**r, "source": r.get("source", path.name)} for r in json.loads(path.read_text())["rows"]
            if (r["N"], r["K"], r["stage"]) not in new]
    return sorted(kept + rows, key=lambda r: (r["N"], -1 if r["K"] == "-" else r["K"]))


def plot(rows: list[dict], path: Path) -> None:
    """Seconds vs N per stage (log-log), one line per (stage, K): a colour per stage, a marker per K
    (matplotlib's 10-colour cycle would give two stages one colour), legend outside the axes."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    ks = [k for k in dict.fromkeys(r["K"] for r in rows) if k != "-"]
    colours = colormaps["tab20"].colors
    for key in dict.fromkeys((r["stage"], r["K"]) for r in rows):
        rs = [r for r in rows if (r["stage"], r["K"]) == key]
        label = key[0] + ("" if key[1] == "-" else f", K={key[1]}")
        style = "--" if rs[0]["how"] == "extrapolated" else "-"
        marker = "o" if key[1] == "-" else "osD^v"[ks.index(key[1]) % 5]
        ax.plot([r["N"] for r in rs], [r["seconds"] for r in rs], style, marker=marker,
                color=colours[2 * stages.index(key[0]) % len(colours)], label=label)
    ax.set(xscale="log", yscale="log", xlabel="rows N", ylabel="seconds", title=f"jaxsel stage costs ({jax.default_backend()})")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    entry(main)
