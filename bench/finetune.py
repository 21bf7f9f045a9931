"""Finetuning throughput: training tokens/s at sequence length 64 for MiniLM and SmolLM2-135M.

    python bench/finetune.py [--quick] [--steps N] [--batch-size 64,256] [--micro-batches 1,4]
                             [--random-weights] [--profile DIR] [--device-batches] [--dispatch]
                             [--transfers]

Each model runs the real jitted train step (forward, backward, AdamW) on batches of tweets
padded to 64 tokens; the first steps (compilation) are excluded. On accelerators the compute is
bf16 and MFU = 6 x parameters x tokens/s / peak bf16 FLOP/s is reported. Both models are
measured side by side with the peer users would pick, PyTorch + transformers on the same weights
(SmolLM2: a LlamaForCausalLM filled from the same GGUF tensors, scored by label words) and the same
token batches (``bench/peers.py``; installed by the ``bench`` extra; on a GPU the peer runs there
too, under bf16 autocast): ``--reps`` alternating rounds of ``--steps`` steps each, medians
reported. ``--random-weights`` gives SmolLM2's architecture random weights on both sides (and
MiniLM's tokenizer for the token ids), for a machine without the 94 MB GGUF: the work per step is
the same. ``--optimizer`` also times the clipped AdamW
update alone over MiniLM's parameters: jaxsel's, optax's ``clip_by_global_norm`` chain, and PyTorch's
AdamW after ``clip_grad_norm_`` (its CPU default, the per-tensor loop, and ``fused=True``).
``--dispatch`` times the host's work to launch a step: the nnx-tree call against the finetune loop's
flat one (:func:`dispatch_times`); ``--device-batches`` and ``--transfers`` ask whether host-device
copies make the fixed ~45 ms a step seen on an H200 (bench/README.md, "GPU").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from jaxsel import allocator  # noqa: E402

allocator.keep_freed_memory()  # as `jaxsel finetune` and `jaxsel run` do, for jaxsel and PyTorch alike; before any thread

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import peers  # noqa: E402
from common import RESULTS, count, counts, entry, report  # noqa: E402
from flax import nnx  # noqa: E402

from jaxsel import assets, data, embed, finetune  # noqa: E402
from jaxsel.config import LENGTH_BUCKETS  # noqa: E402
from jaxsel.models import classifier, llama, tokens  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a few steps (about 2 minutes on 2 idle CPU cores, 2-4.5 on a busy host)")
    ap.add_argument("--steps", type=count(1), default=None)
    ap.add_argument("--batch-size", type=counts(1), default=None, help="comma-separated batch sizes (default: 8 for SmolLM2 and "
                    "32 for MiniLM on CPU, 64 on accelerators)")
    ap.add_argument("--micro-batches", type=counts(1), default="1",
                    help="comma-separated micro-batch counts accumulated inside one optimizer step (PyTorch "
                         "accumulates the same way): a per-step fixed cost shrinks per token as this grows")
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="also trace two more of jaxsel's steps per setting with jax.profiler into DIR")
    ap.add_argument("--random-weights", action="store_true",
                    help="SmolLM2's architecture with random weights (no GGUF needed; same work per step)")
    ap.add_argument("--models", default="minilm,smollm2-135m",
                    help="comma-separated; a subset saves under finetune-MODEL[-MODEL]-BACKEND.json, so a run of one "
                         "model never replaces (or is set aside beside) the results of both")
    ap.add_argument("--tag", default="", help="also in the results file's name: finetune[-MODELS][-TAG]-BACKEND.json")
    ap.add_argument("--reps", type=count(1), default=3, help="alternating timed rounds (jaxsel, then the peer)")
    ap.add_argument("--whole", type=count(0), default=0, metavar="N",
                    help="also time whole N-example MiniLM finetunes (3 epochs, batch 16, 64 tokens, validation 300 "
                         "and test 800 rows): jaxsel's 1st and 2nd in one process (a run's first and later cells) "
                         "against PyTorch's, e.g. --whole 100")
    ap.add_argument("--length-buckets", default="auto", choices=LENGTH_BUCKETS,
                    help="--whole's FinetuneConfig.length_buckets: the padded lengths its train step compiles for "
                         "(all: each batch's bucket; one: the longest; auto: all on CPU, the fewest that pay for their "
                         "compile on accelerators)")
    ap.add_argument("--optimizer", action="store_true", help="also time the clipped AdamW update alone (MiniLM)")
    ap.add_argument("--device-batches", action="store_true",
                    help="also time jaxsel's steps on batches placed on the device before the clock starts "
                         "(tokens_per_s_device_batches): what the per-step host-to-device copies cost")
    ap.add_argument("--transfers", action="store_true",
                    help="also time single host-device copies (a batch's token ids to the device, a loss and "
                         "a 25 MB embedding block back) with jax and, when it imports, PyTorch")
    ap.add_argument("--dispatch", action="store_true",
                    help="also time the host's work to launch one step (until the call returns): train_step over "
                         "nnx trees against the finetune loop's flat_train_step over leaf lists")
    a = ap.parse_args()
    cpu = jax.default_backend() == "cpu"
    steps = a.steps or (3 if a.quick else 10)
    texts, labels, names, (train, _, _), *_ = data.split("tweets")
    skipped = peers.available("torch", "transformers")
    if skipped:
        print(f"peer skipped: {skipped}", file=sys.stderr)
    device = None if skipped else peers.torch_device()
    models = a.models.split(",")
    results_name = "-".join(["finetune"] + (models if sorted(models) != ["minilm", "smollm2-135m"] else [])
                            + ([a.tag] if a.tag else []))
    partial = RESULTS / f"{results_name}-{jax.default_backend()}.partial.json"  # a step gpu.sh cuts short keeps its own
    rows = []
    for model_name, bs, micro in [(m, b, u) for m in models
                                  for b in (a.batch_size if a.batch_size else
                                            [(8 if m != "minilm" else 32) if cpu else 64])
                                  for u in a.micro_batches]:
        cfg = finetune.FinetuneConfig(model=model_name, batch_size=bs, max_length=64)
        random_weights = a.random_weights and model_name == "smollm2-135m"
        model, encode = random_smollm2(cfg, names) if random_weights else finetune.build(cfg, names)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        n_params = sum(x.size for x in jax.tree.leaves(params))
        tx = finetune.optimizer(1.0, 0.01)
        (params, p_def), (opt_state, o_def) = jax.tree.flatten(params), jax.tree.flatten(tx.init(params))
        rest, r_def = jax.tree.flatten(rest)
        bound = finetune.flat_train_step(graphdef, tx, p_def, r_def, o_def)  # the finetune loop's step
        step = lambda *args: bound(*args[:3], np.float32(1e-5), *args[3:])
        rows_a_step = bs * micro
        ids = encode([texts[i] for i in train[: rows_a_step * (steps + 2)]], 64)
        batch_sh, _ = finetune.data_sharding()

        def host_batch(i):
            tok = np.zeros((rows_a_step, 64), np.int32)
            mask = np.zeros((rows_a_step, 64), np.int32)
            for r in range(rows_a_step):
                x = ids[i * rows_a_step + r][:64]
                tok[r, :len(x)], mask[r, :len(x)] = x, 1
            return tok, mask, np.asarray(labels[train[i * rows_a_step:(i + 1) * rows_a_step]], np.int32)

        def batch(i):  # (micro, bs, ...) device arrays: the micro-batches train_step accumulates
            tok, mask, y = host_batch(i)
            return [jax.device_put(v.reshape(micro, bs, *v.shape[1:]), batch_sh)
                    for v in (tok, mask, y, np.ones(rows_a_step, np.float32))]

        peer = None
        if model_name == "minilm" and not skipped:
            peer = peers.TorchFinetune(assets.path("minilm", embed.MINILM_DIR), len(names), device=device)
        elif model_name == "smollm2-135m" and not skipped:
            peer = peers.TorchLlamaFinetune(None if random_weights else assets.path("smollm2", finetune.SMOLLM2_GGUF),
                                            np.asarray(model.label_ids[...]).tolist(), device=device)
        t = time.perf_counter()
        for i in range(2):  # compile and warm up
            params, opt_state, loss = step(params, rest, opt_state, *batch(i))
        jax.block_until_ready(params)
        first_s, t = time.perf_counter() - t, time.perf_counter()
        if peer is not None:
            for i in range(2):
                peer.step(*host_batch(i), micro=micro)
            peer.sync()
        peer_first_s = time.perf_counter() - t

        placed = [batch(i) for i in range(2, steps + 2)] if a.device_batches else None

        def ours_round(n: int = steps, on_device: bool = False):
            nonlocal params, opt_state
            t = time.perf_counter()
            for i in range(2, n + 2):
                params, opt_state, _ = step(params, rest, opt_state, *(placed[i - 2] if on_device else batch(i)))
            jax.block_until_ready(params)
            return time.perf_counter() - t

        ours, theirs, resident = [], [], []
        for _ in range(a.reps):  # alternate, so both see the same machine load
            ours.append(ours_round())
            if placed:
                resident.append(ours_round(on_device=True))
            if peer is not None:
                t = time.perf_counter()
                for i in range(2, steps + 2):
                    peer.step(*host_batch(i), micro=micro)
                peer.sync()
                theirs.append(time.perf_counter() - t)
        if a.profile is not None:
            with jax.profiler.trace(str(a.profile / f"{model_name}-b{bs}-m{micro}")):
                ours_round(2)  # two steps: a trace of ten ran to ~20 MB a setting on CPU
        secs = float(np.median(ours))
        tok_s = steps * rows_a_step * 64 / secs  # token slots, padding included (both sides' work)
        real = sum(min(len(x), 64) for x in ids[2 * rows_a_step:(steps + 2) * rows_a_step])  # the texts' own tokens
        row = {"model": model_name + (" (random weights)" if random_weights else ""), "params_M": n_params / 1e6,
               "batch": bs, "micro_batches": micro, "seq": 64, "steps": steps, "seconds": secs,
               "ms_per_step": secs / steps * 1e3, "tokens_per_s": tok_s, "real_tokens_per_s": real / secs,
               "first_2_steps_s": first_s,
               "dtype": "bf16" if not cpu else "fp32"}
        if theirs:
            row.update(torch_tokens_per_s=steps * rows_a_step * 64 / float(np.median(theirs)),
                       torch_first_2_steps_s=peer_first_s, torch_device=device,
                       torch=peers.version("torch"), transformers=peers.version("transformers"))
            row["vs_torch"] = row["tokens_per_s"] / row["torch_tokens_per_s"]
        if resident:
            row["tokens_per_s_device_batches"] = steps * rows_a_step * 64 / float(np.median(resident))
        util = finetune.mfu(finetune.flops_per_token(model, cfg, 64), tok_s)
        if util is not None:  # of the padded slots, and of the real tokens alone (useful work)
            row["mfu"] = util
            mean_len = real / (steps * rows_a_step)
            row["mfu_real_tokens"] = finetune.mfu(finetune.flops_per_token(model, cfg, int(mean_len)), real / secs)
        rows.append(row)
        print(row, file=sys.stderr)
        partial.write_text(json.dumps(rows, indent=2) + "\n")  # what a cut-short run still leaves
    if a.whole:
        rows += whole_finetunes(a.whole, names, skipped, a.length_buckets)
    if a.optimizer:
        rows += optimizer_steps(names, a.reps, skipped)
    if a.dispatch:
        rows += dispatch_times(a.models.split(","), names, a.random_weights)
    if a.transfers:
        rows += transfer_times(skipped)
    by = {}  # per model, the batch size with the most tokens/s
    for r in rows:
        name = r["model"].split(" (")[0]
        if "tokens_per_s" in r and r["tokens_per_s"] >= by.get(name, {}).get("tokens_per_s", 0.0):
            by[name] = r
    summary = {"minilm_tokens_per_s": by.get("minilm", {}).get("tokens_per_s"),
               "torch_minilm_tokens_per_s": by.get("minilm", {}).get("torch_tokens_per_s"),
               "minilm_vs_torch": by.get("minilm", {}).get("vs_torch"),
               "smollm2_tokens_per_s": by.get("smollm2-135m", {}).get("tokens_per_s"),
               "torch_smollm2_tokens_per_s": by.get("smollm2-135m", {}).get("torch_tokens_per_s"),
               "smollm2_vs_torch": by.get("smollm2-135m", {}).get("vs_torch"),
               "smollm2_mfu": by.get("smollm2-135m", {}).get("mfu"),
               "smollm2_mfu_real_tokens": by.get("smollm2-135m", {}).get("mfu_real_tokens"),
               "smollm2_tokens_per_s_device_batches": by.get("smollm2-135m", {}).get("tokens_per_s_device_batches")}
    opt = {r["model"]: r["ms_per_step"] for r in rows if "ms_per_step" in r and "tokens_per_s" not in r}
    if opt:
        summary.update(adamw_ms=opt.get("jaxsel AdamW"), optax_adamw_ms=opt.get("optax-clipped AdamW"),
                       torch_adamw_ms=opt.get("torch AdamW"), torch_fused_adamw_ms=opt.get("torch AdamW fused"))
        if "torch AdamW" in opt:  # speed ratios (> 1: jaxsel's update is faster)
            summary.update(adamw_vs_torch=opt["torch AdamW"] / opt["jaxsel AdamW"],
                           adamw_vs_torch_fused=opt["torch AdamW fused"] / opt["jaxsel AdamW"])
    for r in rows:
        if "dispatch_ms_flat" in r:
            key = r["model"].split(" (")[0].replace("-", "_").replace(".", "")
            summary.update({f"{key}_dispatch_ms_tree": r["dispatch_ms_tree"], f"{key}_dispatch_ms_flat": r["dispatch_ms_flat"]})
    whole = {r["model"]: r for r in rows if "test_accuracy" in r}
    if whole:
        summary.update({f"whole_{k.replace(' ', '_')}_s": r["seconds"] for k, r in whole.items()})
        first, second = ({k.split()[0]: r["seconds"] for k, r in whole.items() if k.endswith(f" {i}")} for i in (1, 2))
        if "torch" in second:  # both sides' second finetune in the process: warm against warm
            summary["whole_vs_torch"] = second["torch"] / second["jaxsel"]
            summary["whole_first_vs_torch"] = first["torch"] / first["jaxsel"]  # what a lone `jaxsel finetune` meets
        summary["whole_padded_lengths"] = whole["jaxsel finetune 1"]["padded_lengths"]
    report(results_name, rows, ["model", "params_M", "batch", "micro_batches", "seq", "steps", "seconds", "ms_per_step",
                              "tokens_per_s", "torch_tokens_per_s", "vs_torch", "first_2_steps_s", "dtype", "mfu", "mfu_real_tokens",
                              "test_accuracy", "leaves", "dispatch_ms_tree", "dispatch_ms_flat",
                              "tokens_per_s_device_batches", "jax_ms", "torch_ms"],
           summary, a.quick)
    partial.unlink(missing_ok=True)


def random_smollm2(cfg: finetune.FinetuneConfig, names: list[str]):
    """(classifier, text encoder) like :func:`jaxsel.finetune.build` for SmolLM2, with random weights
    of its architecture (``llama.LlamaConfig()``), arbitrary distinct label words and MiniLM's
    tokenizer: the same computation per step without the GGUF."""
    dtype = jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    rngs = nnx.Rngs(cfg.seed)
    dec = llama.Llama(llama.LlamaConfig(), dtype=dtype, rngs=rngs)
    model = classifier.DecoderClassifier(dec, list(range(1000, 1000 + len(names))), rngs=rngs)
    return model, classifier.TextEncoder(tokens.load(assets.path("minilm", embed.MINILM_DIR) / "tokenizer.json"))


def whole_finetunes(n: int, names: list[str], skipped: str | None, length_buckets: str = "auto") -> list[dict]:
    """Rows timing whole ``n``-example MiniLM finetunes on a seeded sample of tweets: jaxsel's first
    and second in this process, and PyTorch's first and second (when it imports; the second against
    the second: both warm). Same rows, same token ids, same protocol
    (:func:`peers.torch_small_finetune`); each side batches as its loop does (jaxsel: length buckets,
    the lengths compiled as ``length_buckets`` says, PyTorch: a shuffled batch padded to its longest row)."""
    dd = data.load("tweets")
    rng = np.random.default_rng(0)
    rows = {s: rng.choice(len(dd[s]), m, replace=False) for s, m in (("train", n), ("validation", 300), ("test", 800))}
    small = data.derive(dd, rows, tag="bench-finetune")
    cfg = finetune.FinetuneConfig(model="minilm", epochs=3, batch_size=16, lr=1e-4, max_length=64,
                                  length_buckets=length_buckets, min_steps=0)  # 3 epochs, as the PyTorch loop
    out = []
    for i in (1, 2):
        t = time.perf_counter()
        m = finetune.train_and_evaluate(small, None, cfg, progress=False)
        out.append({"model": f"jaxsel finetune {i}", "batch": 16, "seq": 64, "steps": m["steps"],
                    "seconds": time.perf_counter() - t, "test_accuracy": m["test_accuracy"],
                    "padded_lengths": m["padded_lengths"]})
        print(out[-1], file=sys.stderr)
    if skipped:
        return out
    _, encode = finetune.build(cfg, names)
    splits = {s: (encode(small[s]["text"], 64), np.asarray(small[s]["label"])) for s in ("train", "validation", "test")}
    for i in (1, 2):
        m = peers.torch_small_finetune(assets.path("minilm", embed.MINILM_DIR), len(names), splits)
        out.append({"model": f"torch {peers.version('torch')} finetune {i}", "batch": 16, "seq": 64, **m})
        print(out[-1], file=sys.stderr)
    return out


def optimizer_steps(names: list[str], reps: int, skipped: str | None, steps: int = 10) -> list[dict]:
    """Rows timing one clipped AdamW update (clip 1.0, weight decay 0.01) over MiniLM's parameters
    with gradients of global norm ~5 (so clipping scales them): jaxsel's (:func:`jaxsel.finetune.optimizer`),
    optax's ``clip_by_global_norm`` chain, and PyTorch's (when it imports), alternating rounds of
    ``steps`` updates, median ms per update."""
    import optax
    model, _ = finetune.build(finetune.FinetuneConfig(model="minilm"), names)
    params = nnx.state(model, nnx.Param)
    rng = np.random.default_rng(0)
    grads = jax.device_put(jax.tree.map(lambda p: np.asarray(rng.standard_normal(p.shape) * 1e-3, np.float32), params))
    txs = {"jaxsel AdamW": finetune.optimizer(1.0, 0.01),
           "optax-clipped AdamW": optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1.0, weight_decay=0.01))}
    runners = {}
    for name, tx in txs.items():
        # donated inputs in the order of the outputs, as train_step has them: out of order, XLA aliases
        # each output to another input's buffer and copies (3-4x slower)
        step = jax.jit(lambda p, o, g, lr, tx=tx: finetune.apply_scaled(tx, g, o, p, lr), donate_argnums=(0, 1))
        state = [jax.tree.map(jnp.copy, params), tx.init(params)]

        def run(step=step, state=state):
            for _ in range(steps):
                state[:] = step(*state, grads, np.float32(1e-5))
            jax.block_until_ready(state[0])
        runners[name] = run
    if not skipped:
        import torch
        for name, kw in (("torch AdamW", {}), ("torch AdamW fused", {"fused": True})):
            ps = [torch.nn.Parameter(torch.from_numpy(np.array(p))) for p in jax.tree.leaves(params)]
            for p, g in zip(ps, jax.tree.leaves(grads)):
                p.grad = torch.from_numpy(np.array(g))
            opt = torch.optim.AdamW(ps, lr=1e-5, weight_decay=0.01, **kw)

            def run(ps=ps, opt=opt):
                for _ in range(steps):
                    torch.nn.utils.clip_grad_norm_(ps, 1.0)
                    opt.step()
            runners[name] = run
    times = {k: [] for k in runners}
    for r in range(reps + 1):  # the first round compiles and warms up
        for name, run in runners.items():
            t = time.perf_counter()
            run()
            if r:
                times[name].append((time.perf_counter() - t) / steps * 1e3)
    n = sum(x.size for x in jax.tree.leaves(params)) / 1e6
    out = [{"model": k, "params_M": n, "steps": steps, "ms_per_step": float(np.median(v))} for k, v in times.items()]
    for row in out:
        print(row, file=sys.stderr)
    return out


def dispatch_times(models: list[str], names: list[str], random_weights: bool, rounds: int = 3,
                   calls: int = 5) -> list[dict]:
    """Rows with the host milliseconds one training step takes to launch (from the call until it
    returns, the step then running asynchronously; the median over ``rounds`` of ``calls`` calls,
    each waited for before the next) for each model, at batch 2 x 16 tokens:
    :func:`jaxsel.finetune.train_step` called with the nnx trees and its static graphdef, against
    :func:`jaxsel.finetune.flat_train_step` (what the finetune loop calls) with lists of arrays.
    Rounds alternate between the two."""
    out = []
    for model_name in models:
        cfg = finetune.FinetuneConfig(model=model_name)
        model, _ = (random_smollm2(cfg, names) if random_weights and model_name == "smollm2-135m"
                    else finetune.build(cfg, names))
        graphdef, params, rest = nnx.split(model, finetune.trainable(cfg), ...)
        tx = finetune.optimizer(1.0, 0.01)
        batch_sh, replicated = finetune.data_sharding()
        trees = list(jax.device_put(finetune.copy_tree((params, tx.init(params))), replicated))  # donated: copies
        flat = [jax.tree.leaves(t) for t in jax.device_put(finetune.copy_tree((params, tx.init(params))), replicated)]
        bound = finetune.flat_train_step(graphdef, tx, *(jax.tree.structure(t) for t in (params, rest, trees[1])))
        batch = [jax.device_put(a, batch_sh) for a in (np.ones((1, 2, 16), np.int32), np.ones((1, 2, 16), np.int32),
                                                        np.zeros((1, 2), np.int32), np.ones((1, 2), np.float32))]
        lr, rest_flat = np.float32(1e-5), jax.tree.leaves(rest)
        launch = {"tree": lambda: finetune.train_step(trees[0], rest, trees[1], lr, *batch, graphdef=graphdef, tx=tx),
                  "flat": lambda: bound(flat[0], rest_flat, flat[1], lr, *batch)}
        times = {k: [] for k in launch}
        for r in range(rounds + 1):  # the first round compiles
            for kind, fn in launch.items():
                for _ in range(calls):
                    t = time.perf_counter()
                    p, o, _ = fn()
                    dt = time.perf_counter() - t
                    jax.block_until_ready(p)
                    (trees if kind == "tree" else flat)[:] = [p, o]
                    if r:
                        times[kind].append(dt * 1e3)
        n = sum(x.size for x in flat[0])
        out.append({"model": model_name + (" (random weights)" if random_weights and model_name != "minilm" else ""),
                    "params_M": n / 1e6, "leaves": len(flat[0]) + len(flat[1]),
                    "dispatch_ms_tree": float(np.median(times["tree"])), "dispatch_ms_flat": float(np.median(times["flat"]))})
        print(out[-1], file=sys.stderr)
    return out


def transfer_times(skipped: str | None, reps: int = 20) -> list[dict]:
    """Rows with the median milliseconds of single copies, each waited for: (128, 64) int32 token ids
    to the device, a scalar and a (16384, 384) float32 block (25 MB, an embedding call's output on an
    accelerator) back to the host; with jax, and with PyTorch when it imports (on its device)."""
    cases = {"ids to device": np.ones((128, 64), np.int32), "scalar to host": np.ones((), np.float32),
             "25 MB to host": np.ones((16384, 384), np.float32)}
    out = []
    for name, x in cases.items():
        on_device = jax.device_put(x).block_until_ready()
        fn = (lambda x=x: jax.device_put(x).block_until_ready()) if "to device" in name else \
            (lambda d=on_device: np.asarray(d + 0))  # a fresh result each time: jax caches a fetched array
        row = {"model": f"copy: {name}", "jax_ms": _median_ms(fn, reps)}
        if not skipped:
            import torch
            dev = peers.torch_device()
            t = torch.from_numpy(x)
            td = t.to(dev)
            sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
            tfn = (lambda: (t.to(dev), sync())) if "to device" in name else (lambda: (td + 0).cpu().numpy())
            row["torch_ms"] = _median_ms(tfn, reps)
        out.append(row)
        print(row, file=sys.stderr)
    return out


def _median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


if __name__ == "__main__":
    entry(main)
