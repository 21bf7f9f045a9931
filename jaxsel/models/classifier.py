"""Text classifiers for finetuning: a BERT encoder with a head, or a decoder scoring label words.

``BertClassifier``: mean-pooled encoder states -> linear head (C classes).
``DecoderClassifier``: a prompt template around the text; the logits of the label words'
first tokens at the last real position (``head="verbalizer"``, default), or a linear head on
the last hidden state (``head="linear"``). Both map (ids (B, T), mask (B, T)) -> logits (B, C).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsel.models import bert, llama, tokens

TEMPLATE = "Text: {text}\nLabel:"


class BertClassifier(nnx.Module):
    def __init__(self, encoder: bert.Bert, num_classes: int, *, rngs: nnx.Rngs):
        self.encoder = encoder
        self.head = nnx.Linear(encoder.cfg.hidden, num_classes, rngs=rngs)

    def __call__(self, ids, mask):
        pooled = bert.mean_pool(self.encoder(ids, mask), mask, normalize=False)
        return self.head(pooled).astype(jnp.float32)

    def packed(self, ids, segments):
        """Logits (B, T, C) of texts packed into rows (ids, segments (B, T), as
        :func:`jaxsel.embed.pack_batch` makes them): entry [b, j] for text j + 1 of row b, the logits
        it gets alone in its own row (to float rounding); where a row has no such text, the head's
        output for a zero pooled vector (its bias): to be ignored."""
        hidden = self.encoder(ids, (segments > 0).astype(jnp.int32), segments)
        pooled = bert.segment_mean_pool(hidden, segments, ids.shape[1], normalize=False)
        return self.head(pooled).astype(jnp.float32)


def last_position(x: jax.Array, mask: jax.Array) -> jax.Array:
    """x (B, T, ...) at each row's last real position (right padding)."""
    return x[jnp.arange(x.shape[0]), jnp.maximum(mask.sum(1) - 1, 0)]


class DecoderClassifier(nnx.Module):
    def __init__(self, decoder: llama.Llama, label_token_ids: list[int], *, head: str = "verbalizer",
                 rngs: nnx.Rngs):
        self.decoder = decoder
        self.label_ids = nnx.Variable(jnp.asarray(label_token_ids, jnp.int32))
        self.head = nnx.Linear(decoder.cfg.hidden, len(label_token_ids), rngs=rngs) if head == "linear" else None

    def __call__(self, ids, mask):
        h = last_position(self.decoder.hidden_states(ids, mask), mask)
        if self.head is not None:
            return self.head(h).astype(jnp.float32)
        emb = self.decoder.embed.embedding[...][self.label_ids[...]] if self.decoder.lm_head is None else \
            self.decoder.lm_head.kernel[...].T[self.label_ids[...]]
        return (h.astype(jnp.float32) @ emb.T.astype(jnp.float32))


@dataclass
class TextEncoder:
    """Turns texts into token id lists for a classifier (truncated to ``max_length``)."""

    tokenizer: object
    template: str | None = None

    def __call__(self, texts: list[str], max_length: int) -> list[list[int]]:
        return tokens.ids(self.tokenizer, texts, max_length, self.template)
