"""Run configs: the typed dataclasses behind ``jaxsel run``'s TOML files, the CLI's defaults and
the library's keyword arguments, and :func:`load_config`.

One config system: every section of a TOML file is one dataclass here or in the module that uses
it (``[proxy]`` :class:`jaxsel.proxy.ProxyConfig`, ``[finetune]``
:class:`jaxsel.finetune.FinetuneConfig`, ``[select.ppo]`` :class:`jaxsel.agents.ppo.PPOConfig`,
``[select.dqn]`` :class:`jaxsel.agents.dqn.DQNConfig`); the CLI takes its defaults from the same fields.
Every value is checked against its field's type when loaded, so a wrong type stops with one line
naming the file, the section, the key and the type expected.
"""

from __future__ import annotations

import dataclasses
import logging
import reprlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from jaxsel import baselines
from jaxsel.data import MISSING_CHOICES
from jaxsel.io import folder_digest
from jaxsel.errors import (MAX_SEED, JaxselError, check_at_least, check_choice, check_range, check_seed, check_types,
                           warn)
from jaxsel.selection import AGENTS, BALANCES, FINALS, GRANULARITIES, parse_budget, read_budget

log = logging.getLogger(__name__)


def later(default, *, before=None):
    """A config field added after stage caches existed: :func:`spelling` leaves it out while it
    holds the value every earlier key meant: ``default``, or ``before`` once the default has changed
    from ``before`` to ``default``. So adding a field keeps the keys of earlier stages, a new
    default gets keys of its own, and a config that pins the former default keeps its caches.
    Never change ``before`` once set."""
    return field(default=default, metadata={"later": True, "keyless": default if before is None else before})


def keyless(cls):
    """``cls()`` with every :func:`later` field at its keyless value (the default of the keys
    written before any of those defaults changed): what stands in, in keys, for settings nothing reads."""
    return cls(**_later_values(cls))


def _later_values(cls) -> dict:
    return {f.name: f.metadata["keyless"] for f in dataclasses.fields(cls) if f.metadata.get("later")}


def as_ran(cls, table: dict) -> dict:
    """A recorded dict of ``cls``'s fields (a signature's or a results document's agent settings)
    with the :func:`later` fields it lacks at their keyless values: what ran before they existed."""
    return {**_later_values(cls), **table}


def spelling(obj) -> str:
    """How a config is spelled in stage-cache keys: its dataclass repr (nested configs spelled the
    same way), without the :func:`later` fields that hold their keyless values; a ``model`` that
    names a local folder also by its files' digest (:func:`jaxsel.io.folder_digest`)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return str(obj)
    parts = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.repr and not _keyless(f, value):
            spelled = spelling(value) if dataclasses.is_dataclass(value) else repr(value)
            if f.name == "model" and isinstance(value, str) and (files := model_files(value)):
                spelled += f"@{files}"
            parts.append(f"{f.name}={spelled}")
    return f"{type(obj).__qualname__}({', '.join(parts)})"


def _keyless(f: dataclasses.Field, value) -> bool:
    """Whether ``value`` of field ``f`` is the value a :func:`later` field's earlier keys meant (left
    out of keys and records)."""
    return bool(f.metadata.get("later")) and value == f.metadata["keyless"]


def settings(obj) -> dict:
    """A config dataclass as a dict (:func:`dataclasses.asdict`) without its :func:`later` fields
    that hold their keyless values: what run signatures record, so adding a field keeps old checkpoints."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    return {k: v for k, v in dataclasses.asdict(obj).items() if not _keyless(fields[k], v)}


class _Absent:
    """The value :func:`differences` gives a key one side lacks (a JSON null is None)."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()


def differences(a, b, path: str = "") -> list[tuple[str, object, object]]:
    """Where two nested settings (dicts of JSON values) differ: (dotted path, value in ``a``, value
    in ``b``) for each differing leaf, :data:`ABSENT` where one side lacks the key; [] when they are equal."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [(path, a, b)]
    return [d for k in sorted(set(a) | set(b), key=str)
            for d in differences(a.get(k, ABSENT), b.get(k, ABSENT), f"{path}.{k}" if path else str(k))]


_SHORT = reprlib.Repr()  # a value in a message: a table that one side lacks is not spelled out whole
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxstring = 2, 4, 6, 6, 80


def _shown(x, y) -> tuple[str, str]:
    """Two differing values for a message: shortened where that still shows them different."""
    short = _SHORT.repr(x), _SHORT.repr(y)
    return short if short[0] != short[1] else (repr(x), repr(y))


def describe_differences(a, b, names: tuple[str, str], limit: int = 3) -> str:
    """:func:`differences` of ``a`` and ``b`` in words, the first ``limit`` with both values: "ppo.network
    ('early' NAME_A, 'late' NAME_B)", with ``names`` naming the two sides, long values shortened
    where that still shows them different (:mod:`reprlib`: "{'lr': 0.0003, 'network': 'late', ...}");
    the next ten by their paths (" and 2 more: select.filter, proxy.score_on")."""
    found = differences(a, b)
    said = [f"{p} ({x} {names[0]}, {y} {names[1]})" for p, x, y in ((p, *_shown(x, y)) for p, x, y in found[:limit])]
    rest = [p for p, _, _ in found[limit:]]
    paths = ", ".join(rest[:10]) + (", ..." if len(rest) > 10 else "")
    return ", ".join(said) + (f" and {len(rest)} more: {paths}" if rest else "")


def recorded_settings(config: dict) -> dict:
    """A run config as results documents record it (:func:`dataclasses.asdict` of a
    :class:`RunConfig`), with the :func:`later` fields it lacks, in it and its sections (one it lacks
    read as empty), at the values that ran before they existed (:func:`as_ran`): a config recorded
    before a field was added compares equal to one recorded after at that value, and a difference
    names both values ("finetune.min_steps (0 ..., 100 ...)", not None for the older side)."""
    out = as_ran(RunConfig, config)
    for name, cls in SECTIONS.items():
        if isinstance(out.get(name), dict) or name not in out:
            out[name] = as_ran(cls, out.get(name, {}))
    return out


SCORE_ON = ("validation", "validation+train")  # ProxyConfig.score_on
MINILM_LAYERS = 6  # jaxsel.models.bert.BertConfig().layers: what the transformer proxy can keep
PROXY_KINDS = ("ridge", "knn", "linear", "mlp", "transformer")  # ProxyConfig.kind
INF = float("inf")
NETWORKS = ("early", "late")  # PPOConfig.network, DQNConfig.network (jaxsel.agents.networks)
NETWORK = "late"  # their default ("early" until 2026-12-05)
MAX_PREFERENCE_RATE = 1e3  # above, a preference moves by lr x rate >= ~3 logits an update: the policy collapses
FILTERS = ("none", "cleanlab", "cleanlab+clusters")  # SelectSpec.filter (jaxsel.label_issues.FILTER_BY)


@dataclass(frozen=True)
class ProxyConfig:
    """How a proxy is prepared (:func:`jaxsel.proxy.make`)."""

    kind: str = "ridge"  # "ridge", "knn", "linear", "mlp" or "transformer"
    lam: float = 1.0  # ridge penalty on the (projected) features
    # reduce embeddings to this many dimensions first (PCA, centred on the train mean); None or >= d:
    # keep all as they are, uncentred (as the committed fulldims runs did), so a constant offset moves scores
    project: int | None = 64
    projection: str = "pca"  # "pca" or "random"
    temperature: float = 5.0  # ridge: logits = temperature x scores, for the log-likelihood
    val_size: int | None = None  # score on a stratified validation sample of this many rows; None: all
    seed: int = 0
    steps: int = 50  # trained kinds: full-batch AdamW steps per subset
    lr: float = 0.05  # trained kinds: learning rate
    weight_decay: float = 1e-4  # trained kinds
    hidden: int = 64  # mlp: hidden units
    max_clusters: int | None = None  # trained kinds: most clusters a subset may hold; None: all K
    layers: int = 2  # transformer: MiniLM layers kept
    tiny: bool = False  # transformer: a small random BERT instead of MiniLM's first layers
    batch_mode: str = "auto"  # score_batch per device: "vmap", "map" (one subset after another), "auto"
    batch_chunk: int = later(1024)  # "vmap": subsets vmapped together at most (lax.map over chunks): bounds memory
    objective: str = "accuracy"  # what selection maximises: "accuracy" or "loglik" (mean log-likelihood)
    score_on: str = later("validation")  # rows scored: "validation", or "validation+train" (plus the pool's own
    # distinct rows that cleanlab does not flag: many more scored rows, so searches overfit them less)
    neighbors: int = later(10)  # knn: the selected rows that vote for a scored row (k of k-NN)
    candidates: int = later(256)  # knn: each scored row's most similar train rows the vote looks among

    def __post_init__(self):
        check_types("proxy", self)
        if self.project == 0:  # as the CLI's --project 0: all dimensions (a TOML file cannot spell None)
            object.__setattr__(self, "project", None)
        if self.project is not None and self.project < 0:
            raise JaxselError(f"proxy project must be at least 1 (0: all dimensions), got {self.project}")
        for name, choices in (("kind", PROXY_KINDS), ("projection", ("pca", "random")), ("score_on", SCORE_ON),
                              ("objective", ("accuracy", "loglik")), ("batch_mode", ("auto", "vmap", "map"))):
            check_choice("proxy", self, name, choices)
        check_range("proxy", self, 0, INF, "lam", "temperature", "lr", low_open=True)  # lam 0: a singular solve
        check_range("proxy", self, 0, INF, "weight_decay")
        check_seed("proxy", self, "seed")
        check_at_least("proxy", self, 1, "val_size", "steps", "hidden", "max_clusters", "layers",
                       "batch_chunk", "neighbors", "candidates")
        if self.kind == "transformer" and not self.tiny and self.layers > MINILM_LAYERS:  # more would start random
            raise JaxselError(f"proxy layers must be at most MiniLM's {MINILM_LAYERS} (the transformer proxy keeps its "
                              f"first layers), got {self.layers}")


BERT_MODELS = ("minilm", "tiny-bert")  # the encoders finetune builds; other models are decoders
FINETUNE_MODELS = ("minilm", "smollm2-135m", "tiny-bert")  # built in; or a local HF Llama folder
EMBED_MODELS = ("minilm", "hash")  # built in; or a local BERT folder
BUILT_IN_MODELS = FINETUNE_MODELS + EMBED_MODELS  # names, never folders (a ./minilm folder leaves them alone)
MODEL_FILES = ("config.json", "tokenizer.json", "*.safetensors")  # what jaxsel reads of a model folder


def model_files(model: str, known: tuple[str, ...] = BUILT_IN_MODELS) -> str:
    """The digest of the files jaxsel reads of a local model folder (``MODEL_FILES``, by
    :func:`jaxsel.io.folder_digest`: a README or a PyTorch copy of the weights beside them changes
    nothing), or "" for a model named in ``known`` (a name, even where a folder of that name sits in
    the working folder) or a path that is not a folder: what tells two local models apart in cache keys; past a folder's
    first revision (:func:`jaxsel.models.llama.revision`) also that ("-r2")."""
    if model in known or not Path(model).is_dir():
        return ""
    from jaxsel.models import llama
    revision = llama.revision(model)  # reads the folder's config.json
    return folder_digest(model, MODEL_FILES) + (f"-r{revision}" if revision > 1 else "")


def check_model_name(owner: str, model: str, known: tuple[str, ...], folder: str) -> None:
    """Raise JaxselError unless ``model`` is one of ``known`` or an existing folder (a ``folder``
    kind of model), so a typo stops a run before its first stage, not at its first finetune."""
    if model not in known and not Path(model).is_dir():
        raise JaxselError(f"{owner} unknown model {model!r}: use one of {', '.join(known)} or {folder}")


LENGTH_BUCKETS = ("auto", "all", "one")
"""FinetuneConfig.length_buckets: ``all``, a batch is padded to the smallest bucket length of
:data:`jaxsel.embed.BUCKETS` that holds its longest text (a compiled step per length a finetune
meets); ``one``, every batch to the finetune's longest (one compiled step); ``auto``, ``all`` on
CPU and, on accelerators, the fewest lengths that pay for their compilation
(:func:`jaxsel.finetune.length_plan`)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """How the target model is finetuned (:func:`jaxsel.finetune.finetune`)."""

    model: str = "minilm"  # minilm, smollm2-135m, tiny-bert, or a local HF Llama folder
    epochs: int = 3  # passes over the training subset
    batch_size: int = 32  # examples per micro-batch (an optimizer step takes batch_size x grad_accum)
    grad_accum: int = 1  # micro-batches summed into each optimizer step (gradient accumulation, as transformers')
    lr: float = 1e-4  # peak learning rate
    warmup: float = 0.1  # share of the steps warming up from learning rate 0 (0..1; the first step is at 0)
    schedule: str = "cosine"  # decay after warmup: "cosine" or "linear"
    weight_decay: float = 0.01  # AdamW
    clip: float = 1.0  # global gradient-norm clip
    max_length: int = 128  # tokens per text, longer texts truncated
    patience: int = 2  # epochs without a better validation accuracy before stopping
    head: str = "verbalizer"  # decoders: "verbalizer" (label words) or "linear"
    lora_rank: int = 0  # decoders: train rank-r LoRA adapters on q/v (and the head) instead of all weights
    dtype: str = "auto"  # "auto" (bf16 on accelerators), "float32" or "bfloat16"
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps (tests, benchmarks)
    min_steps: int = later(100, before=0)  # at least this many optimizer steps (more epochs for small subsets;
    # max_steps caps it): 100 since 2026-12-07, 0 before (bench/README.md, "Every subset trained at least 100 steps")
    length_buckets: str = later("auto")  # LENGTH_BUCKETS: which padded lengths a finetune compiles its steps for

    def __post_init__(self):
        check_types("finetune", self)
        check_model_name("finetune", self.model, FINETUNE_MODELS, "a local HF Llama folder")
        check_at_least("finetune", self, 1, "epochs", "batch_size", "grad_accum", "patience")
        check_at_least("finetune", self, 2, "max_length")  # a [CLS] and a [SEP] at least
        check_at_least("finetune", self, 0, "lora_rank", "min_steps")
        check_seed("finetune", self, "seed")
        for name, choices in (("schedule", ("cosine", "linear")), ("head", ("verbalizer", "linear")),
                              ("dtype", ("auto", "float32", "bfloat16")), ("length_buckets", LENGTH_BUCKETS)):
            check_choice("finetune", self, name, choices)
        check_range("finetune", self, 0, 1, "warmup")
        check_range("finetune", self, 0, INF, "weight_decay")
        check_range("finetune", self, 0, INF, "clip", low_open=True)
        check_range("finetune", self, 0, INF, "lr", low_open=True)
        if self.max_steps is not None and self.max_steps < 1:
            raise JaxselError(f"finetune max_steps must be at least 1 (or unset), got {self.max_steps}")
        if self.lora_rank and self.model in BERT_MODELS:
            raise JaxselError(f"finetune lora_rank applies to decoders (smollm2-135m or a local Llama folder), "
                              f"not {self.model}")
        if self.head != "verbalizer" and self.model in BERT_MODELS:  # it was ignored, yet tagged the output folder
            raise JaxselError(f"finetune head applies to decoders (smollm2-135m or a local Llama folder); {self.model} "
                              f"classifies from its [CLS] token with a linear layer whatever the head")


SEARCH_METHODS = (*AGENTS, "climb", "greedy", "random-search")
BASELINES = baselines.METHODS + ("full",)
VARIANTS = ("clean", "noisy")


@dataclass(frozen=True)
class DataSpec:
    """Dataset and optional stratified caps on each split's rows (seeded, applied before anything)."""

    name: str = "tweets"  # built-in name, a CSV/TSV/JSONL/Parquet file, or a hub dataset
    text_col: str = "text"
    label_col: str = "label"
    split_col: str | None = None  # column holding train/validation/test (any case; dev/val/valid too); None or "": a seeded 80/10/10 split
    max_train: int | None = None  # rows (examples) kept of each split, stratified by label; None: all
    max_validation: int | None = None
    max_test: int | None = None
    seed: int = 0  # of the caps' sampling
    encoding: str | None = None  # of a CSV/TSV/JSON file; None: detected
    missing_labels: str = "drop"  # rows without a label: "drop" (counted), "error", or "keep" ("none", "NA" are classes)
    merge_case: bool = False  # labels that differ only by case are one class
    min_class_rows: int = 0  # drop classes with fewer rows than this (0: keep all)
    split_seed: int = later(0)  # of the seeded 80/10/10 split
    dedup: bool = later(False)  # drop exact duplicate texts

    def __post_init__(self):
        check_types("data", self)
        if self.split_col == "":  # no split column, spelled as the command line can (to clear a config's)
            object.__setattr__(self, "split_col", None)
        check_choice("data", self, "missing_labels", MISSING_CHOICES)
        check_at_least("data", self, 1, "max_train", "max_validation", "max_test")
        check_at_least("data", self, 0, "min_class_rows")
        check_seed("data", self, "seed", "split_seed")


@dataclass(frozen=True)
class NoiseSpec:
    """The noisy variant (:func:`jaxsel.data.noise.corrupt`)."""

    kind: str = later("clusters")  # label noise: "clusters" (whole clusters shifted), "source", "instance"
    flip_fraction: float = 0.2  # share of clusters ("clusters", "source") or of rows ("instance") mislabelled
    duplicate_fraction: float = 0.1  # share of clusters whose examples are copied (0..1)
    copies: int = 3  # extra copies of each example of a duplicated cluster
    seed: int = 0
    rate_low: float = later(0.2)  # "source": each bad source's flip rate is drawn from [rate_low, rate_high]
    rate_high: float = later(0.6)
    near_duplicates: bool = later(False)  # copies are perturbed (word dropout and a swap), not byte-identical
    # the groups flipped and copied: "clusters" (the run's own, the paper's setting) or "independent"
    # (a second k-means of the train embeddings, another seed: noise the run's clusters do not follow)
    groups: str = later("clusters")

    def __post_init__(self):
        from jaxsel.data.noise import KINDS
        check_types("noise", self)
        check_choice("noise", self, "kind", KINDS)
        check_choice("noise", self, "groups", ("clusters", "independent"))
        check_range("noise", self, 0, 1, "flip_fraction", "duplicate_fraction", "rate_low", "rate_high")
        check_at_least("noise", self, 1, "copies")
        check_seed("noise", self, "seed")
        if self.rate_low > self.rate_high:
            raise JaxselError(f"noise rate_low ({self.rate_low}) must not exceed rate_high ({self.rate_high})")
        if self.kind != "instance" and self.flip_fraction + self.duplicate_fraction >= 1:  # checked again by corrupt
            raise JaxselError(f"noise flip_fraction + duplicate_fraction ({self.flip_fraction} + "
                              f"{self.duplicate_fraction}) must be below 1: some clusters must stay clean")
        if self.kind == "instance" and self.flip_fraction >= 1:
            raise JaxselError(f"noise flip_fraction must be below 1 for instance noise, got {self.flip_fraction}")


@dataclass(frozen=True)
class EmbedSpec:
    model: str = "minilm"  # minilm, hash, or a local BERT folder
    max_length: int = 128  # tokens per text, longer texts truncated
    dtype: str = "float32"  # the encoder's compute dtype: float32 or bfloat16 (embeddings are float32 either way)

    def __post_init__(self):
        check_types("embed", self)
        check_model_name("embed", self.model, EMBED_MODELS, "a local BERT folder")
        check_at_least("embed", self, 2, "max_length")  # a [CLS] and a [SEP] at least
        check_choice("embed", self, "dtype", ("float32", "bfloat16"))


KMEANS_METHODS = ("lloyd", "minibatch")


@dataclass(frozen=True)
class ClusterSpec:
    """k-means settings; ``order``: the within-cluster order quota picks and trims follow,
    "random" (seeded) or "typical" (nearest the centroid first); ``method``: "lloyd" (full batch)
    or "minibatch" (:func:`jaxsel.cluster.kmeans`: for millions of rows)."""

    k: int = 100  # clusters
    seed: int = 0
    stratified: bool = False  # cluster each label separately: label-pure clusters
    order: str = "random"  # "random" or "typical"
    method: str = "lloyd"  # "lloyd" or "minibatch"

    def __post_init__(self):
        check_types("cluster", self)
        check_choice("cluster", self, "order", ("random", "typical"))
        check_choice("cluster", self, "method", KMEANS_METHODS)
        check_at_least("cluster", self, 1, "k")
        check_seed("cluster", self, "seed")


@dataclass(frozen=True)
class SelectSpec:
    """Settings shared by the search methods; ``ppo`` / ``dqn`` override fields of their configs.
    ``granularity`` "cluster" or "quota" (with ``quota`` rows per pick, default budget / ``horizon``):
    see :class:`jaxsel.agents.SelectConfig`."""

    rl_steps: int = 20_000  # environment steps of PPO and DQN (all environments together)
    climb_rounds: int = 4  # CLIMB-Disc rounds
    final: str = "best"  # RL result: "best" episode seen, or a "greedy" rollout
    granularity: str = "cluster"  # "cluster" or "quota"
    quota: int | None = None  # examples per pick with granularity "quota"; None: budget / horizon
    horizon: int = 32  # picks per episode that set the default quota
    filter: str = later("none")  # "cleanlab": searches and RL choose among the rows cleanlab does not flag;
    # "cleanlab+clusters": nor the clusters most of whose rows it flags (jaxsel.label_issues.find)
    agreement: bool = later(False)  # PPO/DQN observe each cluster's label agreement with the proxy's out-of-cluster fit
    similarity: bool = later(False)  # PPO/DQN observe each cluster's share of the rows the proxy scores
    balance: str = later("none")  # "none", "proportional" or "equal": per-class example caps (needs stratified clusters)
    ppo: dict = field(default_factory=dict)  # fields of jaxsel.agents.ppo.PPOConfig
    dqn: dict = field(default_factory=dict)  # fields of jaxsel.agents.dqn.DQNConfig

    def __post_init__(self):
        check_types("select", self)
        for name, choices in (("final", FINALS), ("granularity", GRANULARITIES), ("filter", FILTERS),
                              ("balance", BALANCES)):
            check_choice("select", self, name, choices)
        check_at_least("select", self, 1, "rl_steps", "climb_rounds", "horizon", "quota")
        if self.quota is not None and self.granularity != "quota":
            raise JaxselError('select quota sets the examples per pick of granularity = "quota"; '
                              'set granularity = "quota" or remove quota')
        if self.ppo or self.dqn:  # their fields, checked as the agents' configs (jax imported only then)
            from jaxsel.agents import dqn, ppo
            for name, cls in (("ppo", ppo.PPOConfig), ("dqn", dqn.DQNConfig)):
                built = build(cls, getattr(self, name), f"[select.{name}]")  # lr = 1 and 1.0: one stage key
                object.__setattr__(self, name, {key: getattr(built, key) for key in getattr(self, name)})


@dataclass(frozen=True)
class RunConfig:
    """Everything ``jaxsel run`` does; loaded from a TOML file by :func:`load_config`."""

    name: str = "run"
    methods: tuple[str, ...] = SEARCH_METHODS + BASELINES
    budgets: tuple[float, ...] = (0.05, 0.0625)  # fractions of the train split
    variants: tuple[str, ...] = ("clean", "noisy")
    seeds: tuple[int, ...] = (0, 1, 2)
    data: DataSpec = field(default_factory=DataSpec)
    embed: EmbedSpec = field(default_factory=EmbedSpec)
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    select: SelectSpec = field(default_factory=SelectSpec)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    checkpoint_min_examples: int = 1000  # finetunes on fewer examples are not checkpointed (they are short)
    stages: str | None = None  # stage folder; None: RUN/stages. Another run's folder reuses its identical stages

    def __post_init__(self):
        for name, cls in SECTIONS.items():  # a table as a config file spells it, as SelectConfig(ppo={...}) takes
            if isinstance(getattr(self, name), dict):
                object.__setattr__(self, name, build(cls, getattr(self, name), f"[{name}]"))
        if isinstance(self.budgets, (list, tuple)):  # "1/16", as a config file and SelectConfig spell it
            object.__setattr__(self, "budgets", [read_budget(b) for b in self.budgets])
        check_types("run config", self)
        check_at_least("run config", self, 0, "checkpoint_min_examples")
        for name, known in (("method", SEARCH_METHODS + BASELINES), ("variant", VARIANTS)):
            unknown = next((v for v in getattr(self, name + "s") if v not in known), None)
            if unknown is not None:
                raise JaxselError(f"unknown {name} {unknown!r} (choose from {', '.join(known)})")
        if not self.seeds or not self.budgets or not self.methods or not self.variants:
            raise JaxselError("methods, budgets, seeds and variants must not be empty")
        for b in self.budgets:
            parse_budget(repr(b))  # a fraction strictly between 0 and 1
        for name in ("methods", "budgets", "seeds", "variants"):  # a repeat would count one cell twice
            values = getattr(self, name)
            repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if repeated is not None:
                why = " (budgets compare as fractions)" if name == "budgets" else ""
                raise JaxselError(f"{name} lists {repeated!r} twice{why}")
        bad = next((seed for seed in self.seeds if not 0 <= seed <= MAX_SEED), None)
        if bad is not None:
            raise JaxselError(f"seeds must be from 0 to {MAX_SEED}, got {bad}")
        if not self.name.strip():
            raise JaxselError(f"name must not be blank, got {self.name!r}")
        if Path(self.name).name != self.name or self.name in (".", "..") or len(self.name.encode()) > 255:
            raise JaxselError(f"name must be a plain folder name (no '/' or '..', at most 255 bytes), "
                              f"got {self.name[:60]!r}")
        if self.stages is not None and not self.stages.strip():  # it meant RUN/stages, without a word
            raise JaxselError(f"stages must name a folder (leave it out for the run folder's stages/), got {self.stages!r}")
        capped = set(self.methods) & set(SEARCH_METHODS)  # what reads balance (baselines do not: a note says so)
        if self.select.balance != "none" and capped and not self.cluster.stratified:
            raise JaxselError(f"[select] balance = {self.select.balance!r} needs label-pure clusters: "
                              f"set [cluster] stratified = true")
        n = self.noise
        if self.select.balance != "none" and capped and "noisy" in self.variants and n.flip_fraction > 0 and \
                (n.kind != "clusters" or n.groups == "independent"):  # found only when the run drew its mask maps
            raise JaxselError(f"[select] balance = {self.select.balance!r} needs label-pure clusters, and the noisy "
                              f"variant's [noise] (kind = {n.kind!r}, groups = {n.groups!r}) mislabels rows inside "
                              f"clusters: use kind = \"clusters\" with groups = \"clusters\" (whole clusters "
                              f"relabelled), or balance the clean variant alone")


SECTIONS = {"data": DataSpec, "embed": EmbedSpec, "cluster": ClusterSpec, "proxy": ProxyConfig,
            "select": SelectSpec, "finetune": FinetuneConfig, "noise": NoiseSpec}

def build(cls, table: dict, where: str):
    """``cls(**table)``, its fields checked by its own ``__post_init__`` (:func:`check_types` first);
    raises JaxselError naming ``where``, the key and what it must be, or an unknown key."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise JaxselError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    try:
        return cls(**table)
    except (TypeError, ValueError) as e:
        raise JaxselError(_located(str(e), where)) from None


def _located(message: str, where: str) -> str:
    """A config's own error ``message`` (it names its owner: "ppo lr must ...", "unknown ppo network
    ...") placed at ``where`` ("PATH [select.ppo]", "[select.ppo]" or "PATH"), naming the owner once:
    "PATH [select.ppo]: lr must ...". A nested table's message that names its table ("[select.ppo]:
    ...") follows the path alone."""
    if not where.endswith("]"):  # a RunConfig: its owner is the file
        return f"{where}: {message.removeprefix('run config ')}"
    path, section = where[:where.rindex("[")].rstrip(), where[where.rindex("[") + 1:-1].rsplit(".", 1)[-1]
    if message.startswith("["):
        return f"{path} {message}".lstrip()
    message = message.removeprefix(section + " ").replace(f"unknown {section} ", "unknown ", 1)
    return f"{where}: {message}"


SHIPPED_CONFIGS = Path(__file__).parent / "configs"  # the repository's configs/, linked into the package


def _shipped_name(path: Path) -> str | None:
    """The name a relative ``configs/NAME`` or bare ``NAME`` gives a shipped config, else None."""
    if path.is_absolute() or not path.parts or path.parts[0] in (".", ".."):
        return None
    parts = path.parts[1:] if path.parts[0] == "configs" else path.parts
    return parts[0] if len(parts) == 1 else None


def config_file(path: str | Path) -> Path:
    """The file a config argument names: ``path``, or with ``.toml`` added, as given; a bare
    ``NAME`` also as ``configs/NAME`` of the working folder; where no such file exists and it names
    a shipped config (``configs/NAME`` or ``NAME``), that one (:data:`SHIPPED_CONFIGS`, installed
    with the package), with a note saying so; else ``path`` itself (:func:`load_config` says what is
    wrong with it)."""
    path = Path(path)
    name = _shipped_name(path)
    local = [path] + ([Path("configs") / path] if name and len(path.parts) == 1 else [])
    for candidate in (c for p in local for c in (p, p.with_suffix(".toml"))):
        if candidate.is_file():  # a folder named like a config does not hide the shipped one
            return candidate
    if name:
        for candidate in (SHIPPED_CONFIGS / name, (SHIPPED_CONFIGS / name).with_suffix(".toml")):
            if candidate.is_file():
                log.info(f"no {path} in the working folder: using the config shipped with jaxsel, {candidate}")
                return candidate
    return path


def load_config(path: str | Path, **data_overrides) -> RunConfig:
    """Read a TOML run config (``configs/quick`` finds ``configs/quick.toml``); ``data_overrides``
    (name, text_col, label_col, ...) replace fields of its ``[data]`` table when not None.
    The file is read as UTF-8 (with or without a byte-order mark), whatever the locale.
    Raises JaxselError for a missing or empty file, bytes that are not UTF-8, invalid TOML, an unknown key or model, and
    what the configs' own checks refuse (a value of the wrong type, an unknown method, variant,
    granularity, order, filter, balance or score_on, a repeated method, budget, seed or variant, a
    negative seed or a count below one); notes what the file sets that nothing reads
    (:func:`unused_settings`) and, with a ``name`` override, the file's column names that still apply."""
    path = config_file(path)
    if path.is_dir():
        found = sorted(q.name for q in path.glob("*.toml"))[:5]
        raise JaxselError(f"config {path} is a folder; give a TOML file" + (f" in it ({', '.join(found)})" if found else ""))
    if path.exists() and not path.is_file():
        raise JaxselError(f"config {path} is not a regular file (a device, a pipe or a socket); give a TOML file")
    if not path.is_file():
        try:
            where = "" if path.is_absolute() else f" (a relative path is read from the working folder: {Path.cwd()})"
        except FileNotFoundError:  # the working folder was deleted
            where = " (the working folder no longer exists)"
        if _shipped_name(path):
            where += f"; nor is it one of the configs shipped with jaxsel ({SHIPPED_CONFIGS})"
        raise JaxselError(f"no such config: {path}{where}")
    try:  # TOML is UTF-8 whatever the locale; a byte-order mark (Windows Notepad writes one) is dropped
        doc = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise JaxselError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "TOML files are UTF-8: save it as UTF-8")
    except tomllib.TOMLDecodeError as e:
        raise JaxselError(f"{path}: not valid TOML: {e}")
    if not doc:
        raise JaxselError(f"{path}: the config is empty (see configs/README.md for its tables)")
    doc = dict(doc)
    for name in SECTIONS:
        if not isinstance(doc.get(name, {}), dict):
            raise JaxselError(f"{path}: [{name}] must be a table, got {name} = {doc[name]!r}")
    given_overrides = {k: v for k, v in data_overrides.items() if v is not None}
    kept = [f"{k} = {v!r}" for k, v in doc.get("data", {}).items()  # with another dataset, the file's columns that apply
            if "name" in given_overrides and k in ("text_col", "label_col", "split_col") and k not in given_overrides]
    doc["data"] = {**doc.get("data", {}), **given_overrides}
    named = "name" in doc["data"]
    given = {name: set(doc.get(name, {})) for name in SECTIONS}  # the keys the file sets, for unused_settings
    for name, cls in SECTIONS.items():
        doc[name] = build(cls, doc.pop(name, {}), f"{path} [{name}]")
    if "budgets" in doc:
        if not isinstance(doc["budgets"], list):
            raise JaxselError(f"{path}: budgets must be a list of fractions like [0.05, \"1/16\"]")
        try:
            doc["budgets"] = [parse_budget(str(b)) for b in doc["budgets"]]
        except JaxselError as e:
            raise JaxselError(f"{path}: budgets: {e}") from None
    cfg = build(RunConfig, doc, str(path))
    if not named:  # after every check, so a config's mistake stays a one-line error
        log.info(f"{path} names no dataset ([data] name): using the built-in {DataSpec.name!r}")
    if kept:
        log.info(f"the dataset given ({given_overrides['name']}) replaces {path}'s; its [data] {', '.join(kept)} "
                 f"still {'applies' if len(kept) == 1 else 'apply'} (give text_col, label_col, split_col to change "
                 "them: --text-col, --label-col, --split-col on the command line; --split-col '' for none)")
    for note in unused_settings(cfg, given):
        warn(f"{path} sets {note}: unused")
    return cfg


def _unread(cfg: RunConfig, keys: set[str]) -> list[str]:
    """:func:`unused_settings`' notes for the [select] ``keys`` that no method of ``cfg`` reads (the
    agents' tables have notes of their own)."""
    keys = set(keys) - {"rl_steps", "filter", *AGENTS}  # not SelectConfig's own fields
    if not keys:  # (jaxsel.agents imports jax)
        return []
    from jaxsel import agents
    readers = {m: agents.reads(agents.cell_config(cfg.select, m, cfg.budgets[0], 0)) for m in SEARCH_METHODS + BASELINES}
    notes = []
    for k in [f.name for f in dataclasses.fields(agents.SelectConfig) if f.name in keys]:
        if any(k in readers[m] for m in cfg.methods):
            continue
        could = [m for m in SEARCH_METHODS + BASELINES if k in readers[m]]
        why = ("methods list no RL agent (ppo, dqn)" if could == list(AGENTS) else
               f"methods do not list {could[0]!r}" if len(could) == 1 else
               f"methods list none of {', '.join(could)}" if could else
               "quota sets the rows per pick" if cfg.select.quota is not None else
               "granularity 'cluster' picks whole clusters")  # horizon: read only where it sets the quota
        notes.append(f"[select] {k} but {why}")
    return notes


def unused_settings(cfg: RunConfig, given: dict[str, set[str]]) -> list[str]:
    """What a config file sets (``given``: its keys by table) that nothing in ``cfg`` will read, each
    as "[table] key but ...why": agent tables of agents not listed, rl_steps with no agent listed or
    under every listed agent's own total_timesteps, a [select] setting no listed method reads
    (:func:`jaxsel.agents.reads`: e.g. final without an agent, climb_rounds without climb, horizon
    where picks take whole clusters), a filter without a search, a [noise] table without the noisy
    variant, a decoder head for a BERT target."""
    rl = [m for m in AGENTS if m in cfg.methods]
    notes = [f"[select.{m}] but methods do not list {m!r}" for m in AGENTS if getattr(cfg.select, m) and m not in rl]
    if not rl and "rl_steps" in given["select"]:
        notes.append("[select] rl_steps but methods list no RL agent (ppo, dqn)")
    elif "rl_steps" in given["select"] and all("total_timesteps" in getattr(cfg.select, m) for m in rl):
        notes.append(f"[select] rl_steps but {' and '.join(f'[select.{m}] total_timesteps' for m in rl)} "
                     f"set{'s' if len(rl) == 1 else ''} the agents' steps")
    notes += _unread(cfg, given["select"])
    if cfg.select.filter != "none" and not set(SEARCH_METHODS) & set(cfg.methods):
        notes.append(f"[select] filter = {cfg.select.filter!r} but methods list no search ({', '.join(SEARCH_METHODS)})")
    if given["noise"] and "noisy" not in cfg.variants:
        notes.append("[noise] but variants do not list 'noisy'")
    if "head" in given["finetune"] and cfg.finetune.model in BERT_MODELS:
        notes.append(f"[finetune] head, which decoders use, but the target is {cfg.finetune.model}")
    return notes
