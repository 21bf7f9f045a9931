"""A Llama-family decoder in Flax NNX, with loaders for GGUF (SmolLM2) and Hugging Face folders.

RMSNorm, rotary position embeddings (Hugging Face's rotate-half layout), grouped-query attention,
SwiGLU feed-forward, optionally tied input/output embeddings. ``from_gguf`` dequantises with the
``gguf`` package and undoes llama.cpp's row permutation of the q/k projections; the tokenizer is
rebuilt from the GGUF's BPE vocabulary and merges.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsel.errors import JaxselError, counted
from jaxsel.io import loaded
from jaxsel.models.bert import put_weight


DECODERS = ("llama", "qwen2")  # the Hugging Face model types this module reads


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 49152
    hidden: int = 576
    layers: int = 30
    heads: int = 9
    kv_heads: int = 3
    intermediate: int = 1536
    rope_theta: float = 100_000.0
    eps: float = 1e-5
    tie_embeddings: bool = True
    attn_bias: bool = False  # q/k/v projections with biases (Qwen2)
    # Hugging Face's ``rope_scaling`` as sorted (key, value) pairs: () for none, else rope_type "linear"
    # or "llama3" (Llama 3.1 / 3.2 checkpoints) with their keys; see :func:`frequencies`
    rope_scaling: tuple = ()

    def __post_init__(self):
        if self.heads < 1 or self.kv_heads < 1 or self.hidden % self.heads or self.heads % self.kv_heads:
            raise JaxselError(f"a Llama needs heads dividing hidden and kv_heads dividing heads, got hidden "
                              f"{self.hidden}, heads {self.heads}, kv_heads {self.kv_heads}")
        bad = [f"{k} {v!r}" for k, v in (("rope_theta", self.rope_theta), *self.rope_scaling)
               if k != "rope_type" and not (isinstance(v, numbers.Real) and 0 < v < float("inf"))]
        if bad:  # a zero or negative frequency or factor trains to NaN ("diverged"), or to nonsense
            raise JaxselError(f"a Llama's rotary embedding needs positive finite values, got {', '.join(bad)}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, dtype):
        self.scale = nnx.Param(jnp.ones(dim, jnp.float32))
        self.eps, self.dtype = eps, dtype

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(self.dtype)


def frequencies(head_dim: int, theta: float, scaling: tuple = ()) -> jax.Array:
    """(head_dim / 2,) float32 rotary inverse frequencies ``theta ** (-2i / head_dim)``, rescaled as
    Hugging Face's ``rope_scaling`` asks (``LlamaConfig.rope_scaling``): "linear" divides every
    frequency by ``factor``; "llama3" (transformers' ``_compute_llama3_parameters``, Meta's Llama 3.1
    release) divides those of wavelengths above ``original_max_position_embeddings / low_freq_factor``
    by ``factor``, keeps those below ``original_max_position_embeddings / high_freq_factor`` and blends
    linearly between."""
    inv = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    s = dict(scaling)
    if s.get("rope_type") == "linear":
        return inv / s["factor"]
    if s.get("rope_type") == "llama3":
        context, low, high = s["original_max_position_embeddings"], s["low_freq_factor"], s["high_freq_factor"]
        wavelength = 2 * np.pi / inv
        scaled = jnp.where(wavelength > context / low, inv / s["factor"], inv)
        smooth = (context / wavelength - low) / (high - low)
        medium = (wavelength >= context / high) & (wavelength <= context / low)
        return jnp.where(medium, (1 - smooth) * scaled / s["factor"] + smooth * scaled, scaled)
    return inv


def rope(x: jax.Array, positions: jax.Array, inv: jax.Array) -> jax.Array:
    """Rotary embedding (rotate-half layout) of x (B, T, H, D) at positions (B, T), with the (D/2,)
    inverse frequencies ``inv`` (:func:`frequencies`)."""
    ang = positions[..., None].astype(jnp.float32) * inv  # (B, T, D/2)
    cos = jnp.cos(jnp.concatenate([ang, ang], -1))[:, :, None, :]
    sin = jnp.sin(jnp.concatenate([ang, ang], -1))[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, -1)
    rotated = jnp.concatenate([-x2, x1], -1)
    return (x.astype(jnp.float32) * cos + rotated * sin).astype(x.dtype)


class Block(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, dtype, rngs: nnx.Rngs):
        h, hd = cfg.hidden, cfg.head_dim
        lin = lambda i, o, bias=False: nnx.Linear(i, o, use_bias=bias, dtype=dtype, rngs=rngs)
        self.cfg = cfg
        self.attn_norm = RMSNorm(h, cfg.eps, dtype)
        b = cfg.attn_bias
        self.q, self.k, self.v = lin(h, cfg.heads * hd, b), lin(h, cfg.kv_heads * hd, b), lin(h, cfg.kv_heads * hd, b)
        self.o = lin(cfg.heads * hd, h)
        self.mlp_norm = RMSNorm(h, cfg.eps, dtype)
        self.gate, self.up, self.down = lin(h, cfg.intermediate), lin(h, cfg.intermediate), lin(cfg.intermediate, h)

    def __call__(self, x, positions, bias):
        """x (B, T, h), positions (B, T), bias (B, T, T) additive float32 mask -> (B, T, h). The dense
        layers see (B T, h) matrices, as in :class:`jaxsel.models.bert.BertLayer` (faster weight
        gradients on XLA:CPU)."""
        c = self.cfg
        b, t, h = x.shape
        x = x.reshape(b * t, h)
        y = self.attn_norm(x)
        inv = frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
        q = rope(self.q(y).reshape(b, t, c.heads, c.head_dim), positions, inv)
        k = rope(self.k(y).reshape(b, t, c.kv_heads, c.head_dim), positions, inv)
        v = self.v(y).reshape(b, t, c.kv_heads, c.head_dim)
        group = c.heads // c.kv_heads
        q = q.reshape(b, t, c.kv_heads, group, c.head_dim)
        logits = jnp.einsum("bqkgd,bskd->bkgqs", q, k).astype(jnp.float32) / np.sqrt(c.head_dim) + bias[:, None, None]
        attn = jax.nn.softmax(logits, -1).astype(x.dtype)
        ctx = jnp.einsum("bkgqs,bskd->bqkgd", attn, v).reshape(b * t, c.heads * c.head_dim)
        x = x + self.o(ctx)
        y = self.mlp_norm(x)
        return (x + self.down(jax.nn.silu(self.gate(y)) * self.up(y))).reshape(b, t, h)


class Llama(nnx.Module):
    """Decoder: token ids (B, T) and a padding mask (B, T) -> logits (B, T, V) (or hidden states)."""

    def __init__(self, cfg: LlamaConfig, *, dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab_size, cfg.hidden, dtype=dtype, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.layers)])
        self.norm = RMSNorm(cfg.hidden, cfg.eps, dtype)
        self.lm_head = None if cfg.tie_embeddings else nnx.Linear(cfg.hidden, cfg.vocab_size, use_bias=False,
                                                                   dtype=dtype, rngs=rngs)

    def hidden_states(self, ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        mask = jnp.ones_like(ids) if mask is None else mask
        t = ids.shape[1]
        positions = jnp.broadcast_to(jnp.arange(t), ids.shape)
        allowed = jnp.tril(jnp.ones((t, t), bool))[None] & (mask[:, None, :] > 0)
        bias = jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)
        x = self.embed(ids)
        for blk in self.blocks:
            x = blk(x, positions, bias)
        return self.norm(x)

    def __call__(self, ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        h = self.hidden_states(ids, mask)
        if self.lm_head is None:
            return self.embed.attend(h).astype(jnp.float32)
        return self.lm_head(h).astype(jnp.float32)


def add_lora(model: Llama, rank: int, targets: tuple[str, ...] = ("q", "v"), *, rngs: nnx.Rngs) -> None:
    """Replace each block's ``targets`` projections by LoRA linears of ``rank`` (in place).

    The base kernel is kept; the adapter's B matrix starts at zero, so outputs are unchanged until
    training. Train only ``nnx.LoRAParam`` (and any head) to finetune the adapters alone."""
    for blk in model.blocks:
        for name in targets:
            old = getattr(blk, name)
            new = nnx.LoRALinear(old.in_features, old.out_features, lora_rank=rank, use_bias=old.use_bias,
                                 dtype=old.dtype, rngs=rngs)
            new.kernel[...] = old.kernel[...]
            if old.use_bias:
                new.bias[...] = old.bias[...]
            setattr(blk, name, new)


def unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (out, in) -> Hugging Face's rotate-half layout."""
    out = w.shape[0]
    return w.reshape(heads, out // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_tensors(model: Llama, get) -> None:
    """Fill ``model`` from ``get(hf_name) -> np.ndarray`` in Hugging Face layout ([out, in])."""
    put_weight(model.embed.embedding, get("model.embed_tokens.weight"))
    put_weight(model.norm.scale, get("model.norm.weight"))
    if model.lm_head is not None:
        put_weight(model.lm_head.kernel, get("lm_head.weight").T)
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
             "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    for i, blk in enumerate(model.blocks):
        for attr, name in names.items():
            put_weight(getattr(blk, attr).kernel, get(f"model.layers.{i}.{name}.weight").T)
            if model.cfg.attn_bias and attr in ("q", "k", "v"):
                put_weight(getattr(blk, attr).bias, get(f"model.layers.{i}.{name}.bias"))
        put_weight(blk.attn_norm.scale, get(f"model.layers.{i}.input_layernorm.weight"))
        put_weight(blk.mlp_norm.scale, get(f"model.layers.{i}.post_attention_layernorm.weight"))


_GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        raise JaxselError(f"GGUF file has no field {key!r}")
    if len(f.data) == 1:
        v = f.parts[f.data[0]]
        return bytes(v).decode() if f.types[0].name == "STRING" else v.tolist()[0]
    return [bytes(f.parts[i]).decode() if f.types[-1].name == "STRING" else f.parts[i].tolist()[0] for i in f.data]


def gguf_config(reader) -> LlamaConfig:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise JaxselError(f"GGUF architecture {arch!r} is not supported (llama only)")
    g = lambda k: _field(reader, f"llama.{k}")
    f32 = lambda k: float(str(np.float32(g(k))))  # the float32 field's shortest decimal: 1e-05, not 9.99e-06
    names = {t.name for t in reader.tensors}
    scaling = _field(reader, "llama.rope.scaling.type") if "llama.rope.scaling.type" in reader.fields else "none"
    if "rope_freqs.weight" in names or scaling != "none":
        raise JaxselError("GGUF with rope scaling (rope_freqs.weight or llama.rope.scaling.type, as in Llama 3.1+) "
                          "is not supported: load its Hugging Face folder instead")
    return LlamaConfig(len(reader.fields["tokenizer.ggml.tokens"].data), g("embedding_length"), g("block_count"),
                       g("attention.head_count"), g("attention.head_count_kv"), g("feed_forward_length"),
                       f32("rope.freq_base"), f32("attention.layer_norm_rms_epsilon"),
                       "output.weight" not in names)


def gguf_weights(path: str | Path):
    """(config, ``get(hf_name) -> float32 array in Hugging Face layout``, reader) of a
    llama-architecture GGUF file; raises JaxselError for an unreadable file or a missing tensor."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as e:
        raise JaxselError(f"{path}: not a readable GGUF file ({type(e).__name__})")
    cfg = gguf_config(reader)
    tensors = {t.name: t for t in reader.tensors}

    def get(hf: str) -> np.ndarray:
        if hf == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif hf == "model.norm.weight":
            name = "output_norm.weight"
        elif hf == "lm_head.weight":
            name = "output.weight"
        else:
            _, _, i, rest = hf.split(".", 3)
            name = f"blk.{i}.{_GGUF_NAMES[rest.removesuffix('.weight')]}.weight"
        if name not in tensors:
            raise JaxselError(f"GGUF file has no tensor {name}")
        t = tensors[name]
        w = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(tuple(int(s) for s in t.shape[::-1]))
        if name.endswith("attn_q.weight"):
            w = unpermute(w, cfg.heads)
        elif name.endswith("attn_k.weight"):
            w = unpermute(w, cfg.kv_heads)
        return w

    return cfg, get, reader


def from_gguf(path: str | Path, *, dtype=jnp.float32) -> tuple[Llama, object]:
    """(model, tokenizer) from a llama-architecture GGUF file (dequantised to float32)."""
    cfg, get, reader = gguf_weights(path)
    model = nnx.eval_shape(lambda: Llama(cfg, dtype=dtype))  # shapes only: load_tensors fills every parameter
    load_tensors(model, get)
    return model, gguf_tokenizer(reader)


def gguf_tokenizer(reader):
    """A ``tokenizers.Tokenizer`` rebuilt from the GGUF's byte-level BPE fields (digits split)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise JaxselError("only byte-level BPE (gpt2-style) GGUF tokenizers are supported")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    return tok


def _rope_config(c: dict) -> tuple[float, tuple]:
    """(rope_theta, ``LlamaConfig.rope_scaling``) of a config.json: top-level ``rope_theta`` and
    ``rope_scaling``, or transformers 5's ``rope_parameters`` holding both."""
    nested = c.get("rope_parameters") or {}
    theta = c.get("rope_theta", nested.get("rope_theta", 10_000.0))
    scaling = c.get("rope_scaling") or ({k: v for k, v in nested.items() if k != "rope_theta"} or None)
    return float(theta), _rope_scaling(scaling)


def revision(model: str | Path) -> int:
    """The revision of what a local Llama folder ``model`` computes (1 for anything else): 2 where its
    config.json scales the rotary frequencies (jaxsel ignored ``rope_scaling`` until 2026-12-06), so
    finetune stage keys and checkpoints of the earlier outputs are not reused."""
    path = Path(model) / "config.json"
    try:
        return 2 if path.is_file() and _rope_config(json.loads(path.read_text(encoding="utf-8")))[1] else 1
    except (OSError, ValueError, TypeError, AttributeError, KeyError):  # not a readable Llama config: loading says why
        return 1


def _rope_scaling(scaling) -> tuple:
    """A config.json's ``rope_scaling`` as ``LlamaConfig.rope_scaling``; raises ValueError for a kind
    :func:`frequencies` does not compute (their outputs would silently differ from the checkpoint's)."""
    if scaling is None:
        return ()
    kind = scaling.get("rope_type", scaling.get("type"))
    keys = {"default": (), "linear": ("factor",),
            "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
    if kind not in keys:
        raise ValueError(f"rope_scaling of type {kind!r} is not supported (linear, llama3)")
    return tuple(sorted({"rope_type": kind, **{k: float(scaling[k]) for k in keys[kind]}}.items())) if keys[kind] else ()


def from_hf_folder(folder: str | Path, *, dtype=jnp.float32) -> tuple[Llama, object]:
    """(model, tokenizer) from a local Llama/Qwen2-style folder (config.json, *.safetensors,
    tokenizer.json); q/k/v biases (Qwen2) are loaded where the checkpoint has them. Raises
    JaxselError naming the file for a missing or unreadable file, a config without a key it needs,
    or a checkpoint with tensors this architecture does not use (they would be dropped)."""
    from safetensors.numpy import load_file

    from jaxsel.models import tokens

    folder = Path(folder)
    for f in ("config.json", "tokenizer.json"):
        if not (folder / f).is_file():
            raise JaxselError(f"{folder}: missing {f}")
    weights = {}
    for f in sorted(folder.glob("*.safetensors")):
        weights.update(loaded(f, "safetensors file", lambda p: load_file(str(p))))
    if not weights:
        raise JaxselError(f"{folder}: no .safetensors files")
    c = loaded(folder / "config.json", "JSON file", lambda p: json.loads(p.read_text(encoding="utf-8")))
    try:
        theta, scaling = _rope_config(c)
        cfg = LlamaConfig(int(c["vocab_size"]), int(c["hidden_size"]), int(c["num_hidden_layers"]),
                          int(c["num_attention_heads"]), int(c.get("num_key_value_heads", c["num_attention_heads"])),
                          int(c["intermediate_size"]), theta, float(c.get("rms_norm_eps", 1e-6)),
                          bool(c.get("tie_word_embeddings", False)), "model.layers.0.self_attn.q_proj.bias" in weights,
                          scaling)
        unlike = [f"{key} {c[key]!r} (jaxsel's Llama: {ours!r})" for key, ours in
                  (("head_dim", cfg.head_dim), ("hidden_act", "silu")) if c.get(key) not in (None, ours)]
        if c.get("model_type") not in (None, *DECODERS):  # another architecture under Llama's tensor names
            unlike.insert(0, f"model_type {c['model_type']!r} (jaxsel's Llama reads {' and '.join(DECODERS)})")
        if unlike:
            bert = " (a BERT folder? finetune trains decoders from folders; embed reads BERT ones)" \
                if c.get("model_type") == "bert" else ""
            raise JaxselError(f"{folder / 'config.json'}: {', '.join(unlike)}: not supported{bert}")
    except JaxselError:
        raise
    except KeyError as e:
        raise JaxselError(f"{folder / 'config.json'}: no {e.args[0]!r} (not a Llama/Qwen2 config)") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise JaxselError(f"{folder / 'config.json'}: not a Llama/Qwen2 config ({type(e).__name__}: {e})") from None
    used = set()

    def get(name):
        if name not in weights:
            raise JaxselError(f"{folder}: checkpoint has no tensor {name}")
        used.add(name)
        return np.asarray(weights[name], np.float32)

    model = nnx.eval_shape(lambda: Llama(cfg, dtype=dtype))  # shapes only: load_tensors fills every parameter
    load_tensors(model, get)
    if cfg.tie_embeddings and "lm_head.weight" in weights:  # some exports store the tied head too
        if not np.array_equal(weights["lm_head.weight"], weights["model.embed_tokens.weight"]):
            raise JaxselError(f"{folder}: config.json ties the embeddings (tie_word_embeddings) but the checkpoint's "
                              f"lm_head.weight differs from model.embed_tokens.weight")
        used.add("lm_head.weight")
    unused = sorted(n for n in set(weights) - used if not n.endswith("rotary_emb.inv_freq"))  # a recomputed buffer
    if unused:
        raise JaxselError(f"{folder}: the checkpoint has {counted(len(unused), 'tensor')} a Llama/Qwen2 model does not "
                          f"use ({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''}): another architecture")
    tok = loaded(folder / "tokenizer.json", "tokenizer file", tokens.load)
    tokens.check_vocab(tok, cfg.vocab_size, folder)
    return model, tok

