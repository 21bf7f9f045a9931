"""A lever tried for issue 11: the ridge proxy on features of a MiniLM already finetuned on a stratified 5%.

    python bench/warm_proxy.py --config configs/tweets-whole --run bench/results/e2e-tweets-whole --seed 0

On tweets the ridge proxy over frozen MiniLM embeddings ranks 5% subsets against the finetuned
model (``bench/proxy_target.py``). This tries features closer to the target's: MiniLM is finetuned
on the run's stratified 5% of the seed (the same finetune the run's ``stratified`` row made, its
best-validation weights kept through the checkpoint), its encoder embeds the train and validation
splits (:func:`jaxsel.embed.encoder_of`), and on those "warm" features (1) the run's clean 5%
subsets are ranked by the ridge proxy, against their finetuned validation accuracy (Spearman,
scipy), beside the frozen ("cold") features, and (2) greedy selects a 5% with the warm proxy (the
run's granularity, quota, horizon and balance; not its ``filter`` or ``agreement``) and MiniLM is
finetuned on it. Validation only: no test label is printed or saved. Caveats: the stratified
subset's warm features come from a model trained on that subset; the checkpoint is read back with
the signature :func:`jaxsel.finetune.train_and_evaluate` writes. The warm features are kept under
``--work`` (default /tmp/jaxsel-warm) by config name and seed: delete them after changing either.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402
from common import entry, report  # noqa: E402
from flax import nnx  # noqa: E402
from proxy_target import add_run_args, finished, pool_rows, ridge_views, spearman, subset_rows  # noqa: E402

from jaxsel import agents, assets, baselines, embed, finetune, proxy  # noqa: E402
from jaxsel.checkpoint import Checkpoints  # noqa: E402
from jaxsel.models import tokens  # noqa: E402
from jaxsel.proxy.base import features, projector, stratified_subsample  # noqa: E402
from jaxsel.selection import budget_examples  # noqa: E402


def warm_features(dd, rows: np.ndarray, fcfg, max_length: int, work: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(train, validation) embeddings (``max_length`` tokens) by the encoder of MiniLM finetuned
    with ``fcfg`` on train ``rows`` (its best-validation epoch), and that finetune's validation
    accuracy; kept in ``work``."""
    path = work / "features.npz"
    if path.exists():
        f = np.load(path)
        return f["train"], f["validation"], float(f["validation_accuracy"])
    m = finetune.train_and_evaluate(dd, rows, fcfg, ckpt_dir=work / "checkpoints", resume=True)
    net, _ = finetune.build(fcfg, dd["train"].features["label"].names)
    graphdef, params, rest = nnx.split(net, finetune.trainable(fcfg), ...)
    tx = finetune.optimizer(fcfg.clip, fcfg.weight_decay)
    signature = json.dumps({"config": dataclasses.asdict(fcfg), "examples": len(rows)}, sort_keys=True)
    state, _ = Checkpoints(work / "checkpoints", signature, resume=True).restore(
        finetune.TrainState(params, tx.init(params), params))
    net = nnx.merge(graphdef, state.best_params, rest)
    enc = embed.encoder_of(net.encoder, tokens.load(assets.path("minilm", embed.MINILM_DIR) / "tokenizer.json"))
    train, val = (embed.encode(list(dd[s]["text"]), enc, max_length=max_length) for s in ("train", "validation"))
    np.savez(path, train=train, validation=val, validation_accuracy=m["validation_accuracy"])
    return train, val, m["validation_accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/jaxsel-warm")
    args = ap.parse_args()
    f = finished(args)
    cfg, dd, emb, c = f.cfg, f.dd, f.emb, f.clustering
    fcfg = dataclasses.replace(cfg.finetune, seed=args.seed)
    y, pc = np.asarray(dd["train"]["label"]), cfg.proxy
    n = budget_examples(0.05, len(y))
    strat = baselines.indices("stratified", n, args.seed, labels=y, clustering=c, x=emb["train"])
    wx, wvx, strat_val = warm_features(dd, strat, fcfg, cfg.embed.max_length,
                                       Path(args.work) / f"{cfg.name}-s{args.seed}")
    vy = np.asarray(dd["validation"]["label"])
    keep = stratified_subsample(vy, pc.val_size, pc.seed)
    subsets = []
    for r in f.results["rows"]:
        if r["variant"] == "clean" and r["budget"] == 0.05 and r["method"] != "cleanlab":
            rows = subset_rows(r, f.stage_dir, dd, y, c, emb["train"])
            subsets.append((r["method"], r["seed"], rows, r["validation_accuracy"]))
    table, rho = [], {}
    for tag, x, vx in (("cold", emb["train"], emb["validation"][keep]), ("warm", wx, wvx[keep])):
        _, scored, flagged = pool_rows(x, y, c, vx, vy[keep], pc)
        mean, proj = projector(x, pc)
        xf, xvf = (features(a, mean, proj).astype(np.float64) for a in (x, vx))
        for m, seed, rows, finetuned in subsets:
            v = ridge_views(rows, xf, y, xvf, vy[keep], scored, flagged, pc.lam)
            table.append({"features": tag, "method": m, "seed": seed, "searched": v["searched"],
                          "validation": v["validation"], "finetuned_validation": finetuned})
        for view in ("searched", "validation"):
            rho[f"{tag}/{view}"] = spearman([t for t in table if t["features"] == tag], view)["rho"]
    p = proxy.make(wx, y, c, wvx, vy, pc)
    spec = cfg.select
    sel = agents.select(p, c, y, agents.SelectConfig(method="greedy", budget=0.05, seed=args.seed, final=spec.final,
                                                     granularity=spec.granularity, quota=spec.quota,
                                                     horizon=spec.horizon, balance=spec.balance),
                        progress=False, train_x=wx)
    m = finetune.train_and_evaluate(dd, sel.indices, fcfg)
    summary = {"seed": args.seed, "spearman_vs_finetuned_validation": rho,
               "stratified_finetuned_validation": strat_val, "warm_greedy_finetuned_validation": m["validation_accuracy"],
               "warm_greedy_proxy_accuracy": float(sel.scores["proxy_accuracy"]),
               "warm_greedy_label_counts": np.bincount(y[sel.indices], minlength=p.num_classes).tolist(),
               "train_label_counts": np.bincount(y, minlength=p.num_classes).tolist(), "run": str(f.path)}
    report(f"warm-proxy-{cfg.name}-s{args.seed}", table, list(table[0]), summary, quick=False)


if __name__ == "__main__":
    entry(main)
