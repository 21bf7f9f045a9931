"""Tokenization shared by the embedder, the proxies and the finetuner.

Tokenizers (Hugging Face ``tokenizers``) are loaded once per file and never changed afterwards:
truncation is applied to the token ids, not set on the tokenizer, so one cached tokenizer serves
every length and every caller (no hidden state between calls).
"""

from __future__ import annotations

import functools
from pathlib import Path

from jaxsel.errors import JaxselError, is_int


def load(path: str | Path):
    """The ``tokenizers.Tokenizer`` of a ``tokenizer.json``, without padding or truncation (cached
    for each state of the file: one edited in place is read again)."""
    state = Path(path).stat()
    return _load(str(Path(path).absolute()), state.st_size, state.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load(path: str, size: int, mtime_ns: int):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(path)
    tok.no_padding()  # files such as MiniLM's pad everything to 128; callers bucket instead
    tok.no_truncation()
    return tok


def check_vocab(tok, rows: int, folder) -> None:
    """Raise JaxselError where tokenizer ``tok`` gives ids beyond a model's ``rows`` embedding rows
    (a tokenizer.json of another model: the ids past the table read garbage, NaN embeddings or a
    finetune that "diverged"); a table larger than the tokenizer (padded vocabularies) is fine, and
    added special tokens past it (a Llama's ``<pad>``) are not counted: texts rarely spell them."""
    n = 1 + max(tok.get_vocab(with_added_tokens=False).values(), default=-1)  # the largest id, added tokens aside
    if n > rows:
        raise JaxselError(f"{folder}: its tokenizer.json has {n} tokens, its model's embedding table {rows} rows: "
                          f"the tokenizer of another model?")


def check_length(max_length: int, positions: int | None = None) -> None:
    """Raise JaxselError unless 2 <= ``max_length`` (a [CLS] and a [SEP]) and, for a model with a
    learned position table of ``positions`` rows (BERT: 512), ``max_length <= positions``."""
    if not is_int(max_length):
        raise JaxselError(f"max_length must be a whole number of tokens, got {max_length!r}")
    if max_length < 2:
        raise JaxselError(f"max_length must be at least 2 tokens, got {max_length}")
    if positions is not None and max_length > positions:
        raise JaxselError(f"max_length {max_length} exceeds the model's {positions} positions; use at most {positions}")


def _cut(encoding, max_length: int) -> list[int]:
    """At most ``max_length`` ids of one encoding, keeping its trailing special tokens (BERT's
    [SEP]), as the tokenizer's own truncation of a single sequence does."""
    ids = encoding.ids
    if len(ids) <= max_length:
        return ids
    special = encoding.special_tokens_mask
    tail = 0
    while tail < len(ids) and special[len(ids) - 1 - tail]:
        tail += 1
    return ids[:max_length - tail] + ids[len(ids) - tail:]


def ids(tokenizer, texts: list[str], max_length: int, template: str | None = None) -> list[list[int]]:
    """Token ids of each text, at most ``max_length`` (>= 2) each. With ``template`` (a string
    holding ``{text}`` once), each prompt is the tokenizer's special tokens around head, text and
    tail (a Llama tokenizer's BOS once, at the start), the head and tail kept whole and the text cut
    to what ``max_length`` leaves, but never below one token (a template longer than
    ``max_length`` makes longer prompts). Raises JaxselError for one string instead of a list or a
    template without ``{text}``."""
    check_length(max_length)
    if isinstance(texts, str):
        raise JaxselError("texts must be a list of strings, not one string")
    if template is None:
        return [_cut(e, max_length) for e in tokenizer.encode_batch(list(texts))]
    if template.count("{text}") != 1:
        raise JaxselError(f"a prompt template holds {{text}} once, got {template!r}")
    head, tail = template.split("{text}")
    start, end = _specials(tokenizer)
    head_ids = tokenizer.encode(head, add_special_tokens=False).ids if head else []
    tail_ids = tokenizer.encode(tail, add_special_tokens=False).ids if tail else []
    room = max(1, max_length - len(start) - len(head_ids) - len(tail_ids) - len(end))
    return [start + head_ids + e.ids[:room] + tail_ids + end
            for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def _specials(tokenizer) -> tuple[list[int], list[int]]:
    """(ids before, ids after) the text that the tokenizer's post-processor adds to one sequence
    (Llama 2/3: ([BOS], []); BERT: ([CLS], [SEP]); SmolLM2's: ([], [])), found around a probe text
    the vocabulary encodes; all before when none does."""
    for probe in ("a", "the", "0", "."):
        plain = tokenizer.encode(probe, add_special_tokens=False).ids
        full = tokenizer.encode(probe).ids
        if plain:
            at = next(i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain)
            return full[:at], full[at + len(plain):]
    return full, []
