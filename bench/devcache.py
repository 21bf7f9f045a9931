"""Build .devcache/: a compact asset cache to carry to a lent GPU machine (which reaches no registry).

    python bench/devcache.py [--bbc-news]

Copies the tweets and rotten_tomatoes data (5 MB) and MiniLM's tokenizer/config, and stores
MiniLM's weights in float16 (~45 MB instead of 90 MB; the loader upcasts to float32), and
xz-compresses files over 1 MB (tweets' 4.5 MB CSV to ~1 MB; bench/gpu.sh unpacks them there).
Good for throughput, not for the golden test. ``--bbc-news`` adds bbc_news (9.5 MB of small
files; mind the 64 MiB a call carries). SmolLM2's 94 MB weights never fit one call: see
bench/gpu.sh. Point JAXSEL_CACHE at .devcache there.
"""

import lzma
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from jaxsel import assets, embed

DEST = Path(__file__).resolve().parent.parent / ".devcache" / "assets"


def main() -> None:
    names = ("tweets", "rotten_tomatoes", "minilm") + (("bbc_news",) if "--bbc-news" in sys.argv[1:] else ())
    for name in names:
        src = assets.fetch(name)
        dst = DEST / src.name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(str(assets.path("minilm", embed.MINILM_DIR) / "model.safetensors"))
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in weights.items()}
    save_file(half, str(DEST / f"minilm-{assets.ARTIFACTS['minilm'].version}" / embed.MINILM_DIR / "model.safetensors"))
    for big in [f for f in DEST.rglob("*") if f.is_file() and f.suffix in (".csv", ".jsonl", ".tsv")
                and f.stat().st_size > 1 << 20]:
        big.with_name(big.name + ".xz").write_bytes(lzma.compress(big.read_bytes(), preset=9))
        big.unlink()
    print(f"wrote {DEST}")


if __name__ == "__main__":
    main()
