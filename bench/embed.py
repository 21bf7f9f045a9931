"""MiniLM embedding throughput on the tweets train split: jaxsel's packed rows against sentence-transformers.

    python bench/embed.py [--quick] [--n N]

jaxsel packs texts several to a row (``jaxsel.embed.encode``); its rows sweep the tokens per call
(``--sweep``; the CPU default, ``embed.default_batch_tokens()``, is the fastest there). The peer users would pick,
sentence-transformers on the same MiniLM folder (mean pooling, L2 normalisation, max length 256;
``bench/peers.py``, the ``bench`` extra), runs at its default batch size (32) and at 16 and 128,
in alternation with jaxsel's default, ``--reps`` rounds, medians reported; the ratio is taken
against the peer's fastest batch size. Compilation and model loading are excluded on both sides.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import jax  # noqa: E402
import numpy as np  # noqa: E402
import peers  # noqa: E402
from common import count, counts, entry, report  # noqa: E402

from jaxsel import assets, data, embed  # noqa: E402

PEER_BATCH_SIZES = (16, 32, 128)  # 32: sentence-transformers' default


def timed(fn) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a 256-text sample (about 2 minutes on 2 idle CPU cores, 2-4.5 on a busy host)")
    ap.add_argument("--n", type=count(1), default=None, help="number of train texts (default 4096, quick 256)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--reps", type=count(1), default=3, help="alternating timed rounds of jaxsel and the peer")
    ap.add_argument("--sweep", type=counts(1), default="512,1024,2048,4096", help="tokens per call to time (the default is added)")
    ap.add_argument("--precision", choices=("default", "highest"), default="default",
                    help="jax's float32 matmul precision: 'default' runs TF32 on Ampere and newer GPUs, where PyTorch "
                         "keeps full float32 unless told otherwise; 'highest' matches it (results file embed-highest-*)")
    a = ap.parse_args()
    if a.precision == "highest":
        jax.config.update("jax_default_matmul_precision", "highest")
    n = a.n or (256 if a.quick else 4096)
    all_texts, _, _, (train, _, _), *_ = data.split("tweets")  # no `datasets` needed (GPU image lacks it)
    pick = np.random.default_rng(0).choice(train, min(n, len(train)), replace=False)
    texts = [all_texts[i] for i in pick]
    enc = embed.load_encoder("minilm", a.dtype)
    lengths = np.array([len(x) for x in enc.tokenize(texts, 256)])
    groups = embed.row_widths(lengths, 256)
    packed_tokens = sum(len(embed.pack(lengths[m], w)) * w for w, m in groups.items())
    print(f"{len(texts)} texts, {lengths.sum()} tokens; packed rows of widths {sorted(groups)} hold {packed_tokens} "
          f"({packed_tokens / lengths.sum():.3f}x)", file=sys.stderr)
    rows = []
    default = embed.default_batch_tokens()
    for bt in sorted(set(a.sweep) | {default}):
        run = lambda: embed.encode(texts, enc, batch_tokens=bt, progress=False)  # noqa: E731
        run()  # compiles the one packed shape
        ref, secs = timed(run)
        rows.append({"mode": f"jaxsel packed, {bt} tokens a call", "texts": len(texts), "seconds": secs,
                     "texts_per_s": len(texts) / secs, "real_tokens_per_s": lengths.sum() / secs})
    ours = next(r for r in rows if r["mode"].endswith(f" {default} tokens a call"))
    summary = {"texts_per_s": ours["texts_per_s"], "padded_tokens_ratio": packed_tokens / lengths.sum()}
    skipped = peers.available("sentence_transformers", "torch")
    if skipped:
        print(f"peer skipped: {skipped}", file=sys.stderr)
    else:
        folder, device = assets.path("minilm", embed.MINILM_DIR), peers.torch_device()
        jx, st, diff = [], {b: [] for b in PEER_BATCH_SIZES}, {}
        for _ in range(a.reps):  # alternate, so both see the same machine load
            ref, secs = timed(lambda: embed.encode(texts, enc, progress=False))
            jx.append(secs)
            for b in PEER_BATCH_SIZES:
                out, secs = peers.sentence_transformers_encode(folder, texts, b, 256, device)
                st[b].append(secs)
                diff[b] = float(np.abs(out - ref).max())
        ours = len(texts) / float(np.median(jx))
        for b in PEER_BATCH_SIZES:
            secs = float(np.median(st[b]))
            rows.append({"mode": f"sentence-transformers {peers.version('sentence-transformers')} ({device}), batch {b}",
                         "texts": len(texts), "seconds": secs, "texts_per_s": len(texts) / secs,
                         "real_tokens_per_s": lengths.sum() / secs, "max_abs_diff_vs_jaxsel": diff[b],
                         "jaxsel_alternating_texts_per_s": ours})
        best = max(rows[-len(PEER_BATCH_SIZES):], key=lambda r: r["texts_per_s"])
        theirs = next(r for r in rows if r["mode"].endswith("batch 32"))
        summary.update(jaxsel_alternating_texts_per_s=ours, sentence_transformers_texts_per_s=best["texts_per_s"],
                       vs_sentence_transformers=ours / best["texts_per_s"],
                       vs_sentence_transformers_default_batch=ours / theirs["texts_per_s"])
    summary["jax_matmul_precision"] = a.precision
    summary["torch_allow_tf32"] = peers.torch_tf32()
    report("embed" + ("-highest" if a.precision == "highest" else ""), rows, ["mode", "texts", "seconds", "texts_per_s", "real_tokens_per_s", "max_abs_diff_vs_jaxsel",
                           "jaxsel_alternating_texts_per_s"], summary, a.quick)


if __name__ == "__main__":
    entry(main)
