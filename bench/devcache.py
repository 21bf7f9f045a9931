"""Build .devcache/: a compact asset cache to carry to a lent GPU machine (which reaches no registry).

    python bench/devcache.py [--bbc-news] [--wheels]

Copies the tweets and rotten_tomatoes data (5 MB) and MiniLM's tokenizer/config, and stores
MiniLM's weights in float16 (~45 MB instead of 90 MB; the loader upcasts to float32), and
xz-compresses files over 1 MB (tweets' 4.5 MB CSV to ~1 MB; bench/gpu.sh unpacks them there).
Good for throughput, not for the golden test. ``--bbc-news`` adds bbc_news (9.5 MB of small
files; mind the 64 MiB a call carries). SmolLM2's 94 MB weights never fit one call: see
bench/gpu.sh. Point JAXSEL_CACHE at .devcache there. ``--wheels`` also fills .whl/ with Python 3.12
wheels of what the GPU image lacks (:data:`WHEELS`, the versions installed here) and tfp-slim.tar.gz,
tfp-nightly without its TensorFlow modules, tests and the numpy substrate's copy (4 MB against the
wheel's 7; distrax imports only the jax substrate and what it needs).
"""

import argparse
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from jaxsel import assets, embed

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / ".devcache" / "assets"
WHEELS = ("rlax", "distrax", "dm-env", "dm-tree", "gast", "decorator", "datasets", "dill", "multiprocess", "cleanlab",
          "termcolor", "gguf", "stable-baselines3", "sb3-contrib", "gymnasium", "farama-notifications")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def wheels(dest: Path = ROOT / ".whl") -> None:
    """Python 3.12 wheels of :data:`WHEELS` (at the versions installed here; the latest where not)
    and tfp-slim.tar.gz into ``dest``, for ``pip install --no-deps --target`` on the GPU machine."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    pins = []
    for name in WHEELS + ("tfp-nightly",):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *pins], check=True)
    tfp = next(dest.glob("tfp_nightly-*.whl"))
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(tfp) as z:
        keep = [n for n in z.namelist() if not n.endswith("_test.py")
                and not n.startswith("tensorflow_probability/substrates/numpy/")
                and (not n.startswith("tensorflow_probability/python/") or n.startswith("tensorflow_probability/python/internal/")
                     or n.rsplit("/", 1)[-1] in ("__init__.py", "version.py") and n.count("/") == 2)]
        z.extractall(tmp, keep)
        with tarfile.open(dest / "tfp-slim.tar.gz", "w:gz") as tar:
            for top in sorted(os.listdir(tmp)):
                tar.add(os.path.join(tmp, top), top)
    tfp.unlink()
    print(f"wrote {dest} ({sum(f.stat().st_size for f in dest.iterdir()) / 1e6:.1f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bbc-news", action="store_true", help="also bbc_news (9.5 MB of small files)")
    ap.add_argument("--wheels", action="store_true", help="also .whl/: Python 3.12 wheels the GPU image lacks")
    a = ap.parse_args()  # --help had built the cache
    names = ("tweets", "rotten_tomatoes", "minilm") + (("bbc_news",) if a.bbc_news else ())
    for name in names:
        src = assets.fetch(name)
        dst = DEST / src.name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(str(assets.path("minilm", embed.MINILM_DIR) / "model.safetensors"))
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in weights.items()}
    minilm = DEST / f"minilm-{assets.ARTIFACTS['minilm'].version}"
    save_file(half, str(minilm / embed.MINILM_DIR / "model.safetensors"))
    assets.write_manifest(minilm, assets.ARTIFACTS["minilm"])  # the float16 file is the one to trust there
    for big in [f for f in DEST.rglob("*") if f.is_file() and f.suffix in (".csv", ".jsonl", ".tsv")
                and f.stat().st_size > 1 << 20]:
        big.with_name(big.name + ".xz").write_bytes(lzma.compress(big.read_bytes(), preset=9))
        big.unlink()
    print(f"wrote {DEST}")
    if a.wheels:
        wheels()


if __name__ == "__main__":
    main()
