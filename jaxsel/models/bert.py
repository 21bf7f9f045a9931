"""A BERT-family encoder in Flax NNX, with a loader for Hugging Face safetensors weights.

The CPU-sized sentence encoder (all-MiniLM-L6-v2) and, with a head, the CPU-sized finetuning
target. Post-LayerNorm, exact GELU, absolute positions, as in the original BERT.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsel.errors import JaxselError, counted
from jaxsel.io import loaded


EXACT_GELU = ("gelu", "gelu_python")  # Hugging Face's hidden_act names of x * Phi(x)
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # and of its tanh approximation


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12
    tanh_gelu: bool = False  # GELU's tanh approximation (hidden_act gelu_new, gelu_pytorch_tanh, gelu_fast)

    def __post_init__(self):
        if self.heads < 1 or self.hidden % self.heads:
            raise JaxselError(f"a BERT needs heads dividing hidden, got hidden {self.hidden}, heads {self.heads}")

    @classmethod
    def from_hf(cls, path: Path) -> "BertConfig":
        """The config of a Hugging Face ``config.json``; raises JaxselError naming the file for one
        that is not JSON, lacks a key a BERT needs, or sets a model type, activation or position
        embedding other than BERT's (``bert``; exact GELU ``gelu``/``gelu_python`` or its tanh
        approximation ``gelu_new``/``gelu_pytorch_tanh``/``gelu_fast``; ``absolute``)."""
        try:
            c = json.loads(Path(path).read_text(encoding="utf-8"))
            act = c.get("hidden_act", "gelu")
            for key, value, ours in (("model_type", c.get("model_type", "bert"), ("bert",)),
                                     ("hidden_act", act, EXACT_GELU + TANH_GELU),
                                     ("position_embedding_type", c.get("position_embedding_type", "absolute"),
                                      ("absolute",))):
                if value not in ours:  # computed otherwise than jaxsel's BERT: refused
                    from jaxsel.models.llama import DECODERS  # (llama imports this module)
                    decoder = " (a decoder's folder? embed reads BERT folders; finetune trains Llama and Qwen2 ones)" \
                        if key == "model_type" and value in DECODERS else ""
                    raise JaxselError(f"{path}: {key} {value!r} (jaxsel's BERT: {' or '.join(map(repr, ours))}): "
                                      f"not supported{decoder}")
            return cls(int(c["vocab_size"]), int(c["hidden_size"]), int(c["num_hidden_layers"]),
                       int(c["num_attention_heads"]), int(c["intermediate_size"]), int(c["max_position_embeddings"]),
                       int(c.get("type_vocab_size", 2)), float(c.get("layer_norm_eps", 1e-12)), act in TANH_GELU)
        except JaxselError:
            raise
        except KeyError as e:
            raise JaxselError(f"{path}: no {e.args[0]!r} (not a BERT config)") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise JaxselError(f"{path}: not a BERT config ({type(e).__name__}: {e})") from None


class BertLayer(nnx.Module):
    def __init__(self, cfg: BertConfig, *, dtype, rngs: nnx.Rngs):
        h, kw = cfg.hidden, dict(dtype=dtype, rngs=rngs)
        self.heads, self.tanh_gelu = cfg.heads, cfg.tanh_gelu
        self.query, self.key, self.value = (nnx.Linear(h, h, **kw) for _ in range(3))
        self.attn_out = nnx.Linear(h, h, **kw)
        self.attn_norm = nnx.LayerNorm(h, epsilon=cfg.eps, dtype=dtype, rngs=rngs)
        self.up = nnx.Linear(h, cfg.intermediate, **kw)
        self.down = nnx.Linear(cfg.intermediate, h, **kw)
        self.out_norm = nnx.LayerNorm(h, epsilon=cfg.eps, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        """x: (B, T, h); bias: (B, 1, 1, T) or, for packed rows, (B, 1, T, T) float32 additive attention
        mask, added in float32: in bf16 its large negative would round to -inf, and a padding token
        whose keys are all masked would turn NaN and spread through its packed row. The dense layers
        see (B T, h) matrices: on (B, T, h) their weight gradients contract two axes, which XLA:CPU
        does through transposed copies (the training step up to 1.14x slower, at 64 tokens)."""
        b, t, h = x.shape
        x = x.reshape(b * t, h)
        split = lambda y: y.reshape(b, t, self.heads, h // self.heads)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(h // self.heads).astype(x.dtype)
        attn = jax.nn.softmax(logits.astype(jnp.float32) + bias, axis=-1).astype(x.dtype)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b * t, h)
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.out_norm(x + self.down(gelu(self.up(x), self.tanh_gelu))).reshape(b, t, h)


def gelu(x: jax.Array, tanh: bool = False) -> jax.Array:
    """Exact GELU, x * Phi(x), as BERT and PyTorch compute it: 0.5 x (1 + erf(x / sqrt 2)). The same
    function as ``jax.nn.gelu(x, approximate=False)`` to 1e-6 (1 + erf cancels near x = -5), without
    its erfc, whose piecewise kernel and derivative cost the MiniLM training step ~2% on CPU. With
    ``tanh``: the tanh approximation 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) (Hendrycks &
    Gimpel 2016; Hugging Face's ``gelu_new``), ``jax.nn.gelu(x, approximate=True)``."""
    if tanh:
        return jax.nn.gelu(x, approximate=True)
    return 0.5 * x * (1.0 + jax.lax.erf(x * np.sqrt(0.5).astype(x.dtype)))


class Bert(nnx.Module):
    """BERT encoder: token ids (B, T) and attention mask (B, T) -> hidden states (B, T, h)."""

    def __init__(self, cfg: BertConfig, *, dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.cfg = cfg
        self.word = nnx.Embed(cfg.vocab_size, cfg.hidden, dtype=dtype, rngs=rngs)
        self.position = nnx.Embed(cfg.max_positions, cfg.hidden, dtype=dtype, rngs=rngs)
        self.token_type = nnx.Embed(cfg.type_vocab, cfg.hidden, dtype=dtype, rngs=rngs)
        self.emb_norm = nnx.LayerNorm(cfg.hidden, epsilon=cfg.eps, dtype=dtype, rngs=rngs)
        self.layers = nnx.List([BertLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.layers)])

    def __call__(self, ids: jax.Array, mask: jax.Array, segments: jax.Array | None = None) -> jax.Array:
        """ids, mask (B, T) -> hidden states (B, T, h). ``segments`` (B, T) int, for rows that pack several
        texts one after another: the text each token belongs to (1, 2, ...; 0 for padding, where mask
        is 0). Each text then attends only to itself and its positions restart at its first token, so
        it gets the hidden states it would get alone in its own row."""
        b, t = ids.shape
        if segments is None:
            pos = jnp.arange(t)[None]
            keep = mask[:, None, None, :] > 0
        else:
            idx = jnp.arange(t)
            first = jnp.concatenate([jnp.ones((b, 1), bool), segments[:, 1:] != segments[:, :-1]], axis=1)
            pos = idx - jax.lax.cummax(jnp.where(first, idx, 0), axis=1)
            keep = ((segments[:, :, None] == segments[:, None, :]) & (mask[:, None, :] > 0))[:, None]
        x = self.word(ids) + self.position(pos) + self.token_type(jnp.zeros_like(ids))
        x = self.emb_norm(x)
        bias = jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
        for layer in self.layers:
            x = layer(x, bias)
        return x


def mean_pool(hidden: jax.Array, mask: jax.Array, normalize: bool = True) -> jax.Array:
    """Mean of hidden (B, T, h) over the positions where mask (B, T) is set, then L2-normalised."""
    m = mask[..., None].astype(jnp.float32)
    pooled = (hidden.astype(jnp.float32) * m).sum(1) / jnp.clip(m.sum(1), 1e-9)
    if normalize:
        pooled = pooled / jnp.clip(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled


def segment_mean_pool(hidden: jax.Array, segments: jax.Array, n: int, normalize: bool = True) -> jax.Array:
    """Mean of hidden (B, T, h) over each text of packed rows, then L2-normalised: (B, n, h), entry
    [b, j] for the tokens where segments (B, T) is j + 1; texts a row lacks come out as zeros."""
    onehot = jax.nn.one_hot(segments - 1, n, dtype=jnp.float32)  # segment 0 (padding) -> all zeros
    pooled = jnp.einsum("btn,bth->bnh", onehot, hidden.astype(jnp.float32))
    pooled = pooled / jnp.clip(onehot.sum(1)[..., None], 1e-9)
    if normalize:
        pooled = pooled / jnp.clip(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled


_LAYER_KEYS = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
    "up": "intermediate.dense", "down": "output.dense", "out_norm": "output.LayerNorm",
}


def put_weight(param: nnx.Variable, value: np.ndarray, what: str = "checkpoint") -> None:
    """Set ``param`` to ``value`` in its dtype (also replacing an abstract ``eval_shape`` value);
    JaxselError naming ``what`` when the shapes differ."""
    if param.shape != value.shape:
        raise JaxselError(f"{what} shape mismatch: {value.shape} for a {param.shape} parameter")
    param.set_value(jnp.asarray(value, dtype=param.dtype))


ENCODER = ("embeddings.", "encoder.")  # the tensors an encoder reads live here (after a ``bert.`` prefix)
BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")  # saved by some exports, recomputed here


def load_weights(model: Bert, weights: dict[str, np.ndarray]) -> None:
    """Copy Hugging Face BERT weights (optionally ``bert.``-prefixed) into ``model`` in place. Raises
    JaxselError for a missing tensor, a layer count other than the checkpoint's, or tensors under
    the encoder's names (:data:`ENCODER`) it does not read; heads (pooler, classifier, MLM) are left out."""
    if any(k.startswith("bert.") for k in weights):
        weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    held = 1 + max((int(k.split(".")[2]) for k in weights if re.match(r"encoder\.layer\.\d+\.", k)), default=-1)
    if held and held != len(model.layers):  # none: another naming, said by the first missing tensor
        raise JaxselError(f"the BERT checkpoint holds {held} layers, its config's num_hidden_layers {len(model.layers)}")
    used = set()

    def get(key: str) -> np.ndarray:
        if key not in weights:
            raise JaxselError(f"BERT checkpoint has no tensor {key!r}: not a BERT-family checkpoint?")
        used.add(key)
        return np.asarray(weights[key], dtype=np.float32)

    put = partial(put_weight, what="BERT checkpoint")

    def linear(mod: nnx.Linear, prefix: str) -> None:
        put(mod.kernel, get(prefix + ".weight").T)
        put(mod.bias, get(prefix + ".bias"))

    def norm(mod: nnx.LayerNorm, prefix: str) -> None:
        put(mod.scale, get(prefix + ".weight"))
        put(mod.bias, get(prefix + ".bias"))

    put(model.word.embedding, get("embeddings.word_embeddings.weight"))
    put(model.position.embedding, get("embeddings.position_embeddings.weight"))
    put(model.token_type.embedding, get("embeddings.token_type_embeddings.weight"))
    norm(model.emb_norm, "embeddings.LayerNorm")
    for i, layer in enumerate(model.layers):
        for attr, key in _LAYER_KEYS.items():
            (norm if attr.endswith("norm") else linear)(getattr(layer, attr), f"encoder.layer.{i}.{key}")
    if extra := sorted(k for k in set(weights) - used if k.startswith(ENCODER) and k not in BUFFERS):
        raise JaxselError(f"the BERT checkpoint has {counted(len(extra), 'tensor')} jaxsel's BERT does not use "
                          f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}): another architecture")


def from_pretrained(folder: Path, *, dtype=jnp.float32) -> Bert:
    """A :class:`Bert` from a folder with ``config.json`` and ``model.safetensors``."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    for f in ("config.json", "model.safetensors"):
        if not (folder / f).exists():
            raise JaxselError(f"{folder}: missing {f}")
    cfg = BertConfig.from_hf(folder / "config.json")
    model = nnx.eval_shape(lambda: Bert(cfg, dtype=dtype))  # shapes only: every parameter is loaded below
    weights = loaded(folder / "model.safetensors", "safetensors file", lambda p: load_file(str(p)))
    try:
        load_weights(model, weights)
    except JaxselError as e:  # named by the folder
        raise JaxselError(f"{folder}: {e}") from None
    return model
