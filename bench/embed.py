"""MiniLM embedding throughput on the tweets train split: length-bucketed vs padded-to-max jit loop.

    python bench/embed.py [--quick] [--n N]

Both loops run the same jit-compiled Flax encoder with the same batch size; the plain loop pads
every batch to max_length (256), the bucketed one sorts by length and pads to a few bucket sizes.
The peer users would pick, sentence-transformers on the same MiniLM folder (mean pooling, L2
normalisation, same batch size and max length; ``bench/peers.py``, the ``bench`` extra), runs
in alternation with jaxsel's bucketed loop, ``--reps`` rounds, medians reported.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402
import peers  # noqa: E402
from common import report  # noqa: E402

from jaxsel import assets, data, embed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a 256-text sample (under 2 minutes on 2 CPU cores)")
    ap.add_argument("--n", type=int, default=None, help="number of train texts (default 4096, quick 256)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--reps", type=int, default=3, help="alternating timed rounds of jaxsel and the peer")
    a = ap.parse_args()
    n = a.n or (256 if a.quick else 4096)
    all_texts, _, _, (train, _, _), _ = data.split("tweets")  # no `datasets` needed (GPU image lacks it)
    pick = np.random.default_rng(0).choice(train, min(n, len(train)), replace=False)
    texts = [all_texts[i] for i in pick]
    enc = embed.load_encoder("minilm", a.dtype)
    tokens = sum(len(x) for x in enc.tokenize(texts, 256))
    rows = []
    for mode, bucketed in (("bucketed", True), ("padded-to-max", False)):
        kw = dict(batch_size=a.batch_size, dtype=a.dtype, bucketed=bucketed, progress=False)
        embed.encode(texts, **kw)  # compiles every bucket shape once
        t = time.perf_counter()
        out = embed.encode(texts, **kw)
        secs = time.perf_counter() - t
        rows.append({"mode": mode, "texts": len(texts), "seconds": secs, "texts_per_s": len(texts) / secs,
                     "real_tokens_per_s": tokens / secs})
        if bucketed:
            ref = out
        else:
            rows[-1]["max_abs_diff_vs_bucketed"] = float(np.abs(out - ref).max())
    skipped = peers.available("sentence_transformers", "torch")
    if skipped:
        print(f"peer skipped: {skipped}", file=sys.stderr)
    else:
        ours, theirs = [], []
        kw = dict(batch_size=a.batch_size, dtype=a.dtype, progress=False)
        for _ in range(a.reps):  # alternate, so both see the same machine load
            t = time.perf_counter()
            embed.encode(texts, **kw)
            ours.append(time.perf_counter() - t)
            st, secs = peers.sentence_transformers_encode(assets.path("minilm", embed.MINILM_DIR), texts,
                                                          a.batch_size, 256)
            theirs.append(secs)
        secs = float(np.median(theirs))
        rows.append({"mode": f"sentence-transformers {peers.version('sentence-transformers')}", "texts": len(texts),
                     "seconds": secs, "texts_per_s": len(texts) / secs, "real_tokens_per_s": tokens / secs,
                     "max_abs_diff_vs_bucketed": float(np.abs(st - ref).max()),
                     "jaxsel_alternating_texts_per_s": len(texts) / float(np.median(ours))})
    summary = {"texts_per_s": rows[0]["texts_per_s"], "bucketed_vs_plain": rows[0]["texts_per_s"] / rows[1]["texts_per_s"]}
    if len(rows) > 2:
        summary.update(sentence_transformers_texts_per_s=rows[2]["texts_per_s"],
                       vs_sentence_transformers=rows[2]["jaxsel_alternating_texts_per_s"] / rows[2]["texts_per_s"])
    report("embed", rows, ["mode", "texts", "seconds", "texts_per_s", "real_tokens_per_s", "max_abs_diff_vs_bucketed",
                           "jaxsel_alternating_texts_per_s"],
           summary, a.quick)


if __name__ == "__main__":
    main()
