"""The ``transformer`` proxy: a small BERT finetuned on the chosen clusters' samples.

The paper's "smaller model of the same family": the first ``cfg.layers`` layers of MiniLM
(or, with ``cfg.tiny``, a small random BERT for tests), with frozen token embeddings and a
mean-pooled linear head, trained for ``cfg.steps`` AdamW steps inside ``lax.scan``. Pure, so
``jax.vmap`` trains one copy per candidate mask. Expensive: meant for accelerators.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsel.models import bert
from jaxsel.proxy.base import ProxyConfig
from jaxsel.proxy.head import Trained, train_head

TINY = bert.BertConfig(hidden=32, layers=2, heads=2, intermediate=64, max_positions=512)


class Layers(nnx.Module):
    def __init__(self, cfg: bert.BertConfig, n: int, rngs: nnx.Rngs):
        self.layers = nnx.List([bert.BertLayer(cfg, dtype=jnp.float32, rngs=rngs) for _ in range(n)])

    def __call__(self, x, bias):
        for layer in self.layers:
            x = layer(x, bias)
        return x


@functools.lru_cache(maxsize=8)
def _graphdef(cfg: bert.BertConfig, n: int):
    return nnx.split(nnx.eval_shape(lambda: Layers(cfg, n, nnx.Rngs(0))))[0]


def bert_config(cfg: ProxyConfig) -> bert.BertConfig:
    """The proxy model's shape: :data:`TINY` with ``cfg.tiny``, else MiniLM's (30,522 tokens, 512 positions)."""
    return TINY if cfg.tiny else bert.BertConfig()


def init_params(cfg: ProxyConfig, num_classes: int) -> dict:
    """{'frozen': token-embedding arrays, 'train': layer state and head}, from MiniLM or random."""
    bcfg = bert_config(cfg)
    if cfg.tiny:
        model = bert.Bert(bcfg, rngs=nnx.Rngs(cfg.seed))
    else:
        from jaxsel import assets, embed
        model = bert.from_pretrained(assets.path("minilm", embed.MINILM_DIR))
    layers = Layers(bcfg, cfg.layers, nnx.Rngs(cfg.seed))
    for mine, theirs in zip(layers.layers, model.layers):
        nnx.update(mine, nnx.state(theirs))
    frozen = {"word": model.word.embedding[...], "position": model.position.embedding[...],
              "type": model.token_type.embedding[...][0], "scale": model.emb_norm.scale[...],
              "bias": model.emb_norm.bias[...]}
    head = jnp.zeros((bcfg.hidden + 1, num_classes), jnp.float32)
    return {"frozen": frozen, "train": {"layers": nnx.state(layers, nnx.Param), "head": head}}


def apply(cfg: ProxyConfig, frozen: dict, params: dict, tokens: jax.Array) -> jax.Array:
    """Logits (n, C) of token ids (n, T) (0 = padding) under trainable ``params``."""
    bcfg = bert_config(cfg)
    mask = tokens > 0
    x = frozen["word"][tokens] + frozen["position"][: tokens.shape[1]][None] + frozen["type"]
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    x = (x - mu) / jnp.sqrt(var + bcfg.eps) * frozen["scale"] + frozen["bias"]
    bias = jnp.where(mask[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
    h = nnx.merge(_graphdef(bcfg, cfg.layers), params["layers"])(x, bias)
    pooled = bert.mean_pool(h, mask.astype(jnp.int32))
    return jnp.concatenate([pooled, jnp.ones((len(pooled), 1))], 1) @ params["head"]


class Transformer(Trained):
    """The transformer proxy: ``xs`` and ``xv`` hold token ids, ``params0`` :func:`init_params`."""

    def logits(self, x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
        fn = functools.partial(apply, self.cfg, self.params0["frozen"])
        return fn(train_head(self.params0["train"], x, y, w, self.cfg, apply=fn), self.xv)
