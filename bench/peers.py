"""What a user would install instead of jaxsel, run on the same inputs for side-by-side timings.

Each peer is optional (``pip install -e ".[bench]"``): :func:`available` says whether its packages
import, and a benchmark without them prints one line saying which peer it skipped and why.

- ``torch``: PyTorch + transformers ``BertForSequenceClassification`` loaded from the same MiniLM
  safetensors, and ``LlamaForCausalLM`` filled from the same SmolLM2 GGUF tensors with jaxsel's
  verbalizer scoring; one AdamW step with global-norm clipping on the same token batches (fp32 on CPU; on a GPU
  bf16 autocast over float32 weights, as jaxsel trains there).
- ``sentence-transformers``: the same MiniLM folder with mean pooling and L2 normalisation
  (all-MiniLM-L6-v2's own recipe), ``encode`` at the same batch size and max length.
- ``faiss``: ``faiss.Kmeans`` (Lloyd, one init) at the same k and iterations.
"""

from __future__ import annotations

import importlib
import os
import time
from importlib import metadata

import numpy as np


def available(*modules: str) -> str | None:
    """None when every module imports, else a one-line reason naming the first that does not."""
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception as e:  # ImportError, or a broken install raising anything at import
            return f"{m} does not import ({type(e).__name__}: {str(e)[:80]}); pip install -e \".[bench]\""
    return None


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}  # jaxsel's finetuner has none


class TorchFinetune:
    """PyTorch + transformers: MiniLM with a sequence-classification head, AdamW (weight decay
    0.01) after global-norm clipping at 1.0 -- jaxsel's finetuning step (:func:`jaxsel.finetune.train_step`).
    Without dropout by default, as jaxsel trains (the same computation); ``dropout=True`` keeps
    BERT's 0.1, transformers' default, which costs PyTorch ~20% of a step on CPU."""

    def __init__(self, folder, num_labels: int, lr: float = 1e-5, threads: int | None = None,
                 dropout: bool = False, device: str = "cpu"):
        import transformers
        extra = {} if dropout else NO_DROPOUT
        self._setup(transformers.BertForSequenceClassification.from_pretrained(str(folder), num_labels=num_labels,
                                                                                **extra), lr, threads, device)

    def _setup(self, model, lr: float, threads: int | None, device: str) -> None:
        """Seed and thread count, ``model`` on ``device`` in training mode, AdamW over its
        parameters. On a GPU the forward and backward run under bf16 autocast with float32
        weights and optimizer state, as jaxsel trains there (bf16 compute, float32 parameters)."""
        import torch
        torch.manual_seed(0)
        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.torch, self.device, self.model = torch, device, model.to(device)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)

    def loss(self, ids, mask, labels):
        """The batch's mean cross-entropy (torch int64 tensors in)."""
        return self.model(input_ids=ids, attention_mask=mask, labels=labels).loss

    def step(self, tokens: np.ndarray, mask: np.ndarray, labels: np.ndarray, micro: int = 1):
        """One optimizer step on a (B, T) batch, its gradient accumulated over ``micro`` equal
        micro-batches (as jaxsel's ``train_step`` does); returns the last micro-batch's mean loss
        as a tensor (no device sync: call :meth:`sync` before reading a clock)."""
        t = self.torch
        batch = [t.from_numpy(a.astype(np.int64)).to(self.device, non_blocking=True) for a in (tokens, mask, labels)]
        for part in zip(*(b.chunk(micro) for b in batch)):
            with t.autocast(self.device, dtype=t.bfloat16, enabled=self.device != "cpu"):
                loss = self.loss(*part) / micro
            loss.backward()
        t.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach() * micro

    def sync(self) -> None:
        """Wait for the device's queued work (a no-op on CPU)."""
        if self.device != "cpu":
            self.torch.cuda.synchronize()


class TorchLlamaFinetune(TorchFinetune):
    """PyTorch + transformers: SmolLM2 as ``LlamaForCausalLM`` filled from the same GGUF tensors
    jaxsel loads (:func:`jaxsel.models.llama.gguf_weights`), scored like jaxsel's verbalizer head
    (the label words' logits at each row's last real token), the same clipped AdamW step.
    ``gguf_path=None``: random weights of SmolLM2's architecture (``LlamaConfig()``), for timings
    where the GGUF is not at hand (the work per step does not depend on the weights' values)."""

    def __init__(self, gguf_path, label_token_ids: list[int], lr: float = 1e-5, threads: int | None = None,
                 device: str = "cpu"):
        import torch
        import transformers
        from jaxsel.models import llama
        cfg, get, _ = llama.gguf_weights(gguf_path) if gguf_path is not None else (llama.LlamaConfig(), None, None)
        hf = transformers.LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                                      num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
                                      intermediate_size=cfg.intermediate, rope_theta=cfg.rope_theta,
                                      rms_norm_eps=cfg.eps, tie_word_embeddings=cfg.tie_embeddings)
        model = transformers.LlamaForCausalLM(hf)
        if get is not None:
            state = {k: torch.tensor(get(k)) for k in model.state_dict()
                     if not (k == "lm_head.weight" and cfg.tie_embeddings) and "rotary" not in k}
            model.load_state_dict(state, strict=False)  # leaves out only the tied head and rotary buffers
        self._setup(model, lr, threads, device)
        self.words = torch.tensor(label_token_ids, device=device)

    def loss(self, ids, mask, labels):
        h = self.model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        last = h[self.torch.arange(len(h), device=h.device), mask.sum(1) - 1]
        logits = last @ self.model.model.embed_tokens.weight[self.words].T
        return self.torch.nn.functional.cross_entropy(logits, labels)


def sentence_transformers_encode(folder, texts: list[str], batch_size: int, max_length: int,
                                  device: str = "cpu") -> tuple[np.ndarray, float]:
    """(embeddings (n, 384), seconds of the timed call after one warm-up batch) with
    sentence-transformers on the MiniLM folder on ``device``: mean pooling, then L2 normalisation
    (float32, its default)."""
    from sentence_transformers import SentenceTransformer
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer
    word = Transformer(str(folder), max_seq_length=max_length)
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    st = SentenceTransformer(modules=[word, Pooling(dim(), "mean"), Normalize()], device=device)
    st.encode(texts[:batch_size], batch_size=batch_size)
    t = time.perf_counter()
    out = st.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return out, time.perf_counter() - t


def torch_device() -> str:
    """"cuda" when jax computes on a GPU and PyTorch sees one too (the peer then runs on the same
    device), else "cpu"."""
    import jax
    import torch
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_tf32() -> bool | None:
    """Whether PyTorch runs float32 CUDA matmuls as TF32 (``torch.backends.cuda.matmul.allow_tf32``;
    False unless set), None without PyTorch: what a float32 comparison with jax on a GPU depends on."""
    try:
        import torch
    except ImportError:
        return None
    return bool(torch.backends.cuda.matmul.allow_tf32)


def faiss_kmeans(x: np.ndarray, k: int, iters: int, seed: int = 1) -> tuple[float, float]:
    """(seconds, inertia) of ``faiss.Kmeans`` (one init, ``iters`` Lloyd iterations) on x (N, d)."""
    import faiss
    km = faiss.Kmeans(x.shape[1], k, niter=iters, nredo=1, seed=seed, verbose=False, max_points_per_centroid=x.shape[0])
    t = time.perf_counter()
    km.train(np.ascontiguousarray(x, np.float32))
    secs = time.perf_counter() - t
    dist, _ = km.index.search(np.ascontiguousarray(x, np.float32), 1)
    return secs, float(dist.sum())


def numpy_selection_env(proxy, budget: int, record: list, features: np.ndarray | None = None,
                        max_steps: int = 1):
    """The selection MDP (whole-cluster picks, exact budget trim, reward = 100 x the change in
    the ridge proxy's validation accuracy) as a ``gymnasium.Env`` computing the reward in numpy
    from the same per-cluster sufficient statistics: what a user of stable-baselines3 would
    write. Observation: the share of each cluster taken, the budget used and the picks made;
    with ``features`` (K, F), jaxsel's own observation instead, flattened: per cluster the share
    taken, budget used, picks / ``max_steps``, then its features (for :func:`deep_sets_policy`).
    ``action_masks()`` for sb3-contrib's MaskablePPO. Each finished episode's final proxy
    accuracy is appended to ``record``."""
    import gymnasium as gym
    import jax

    from jaxsel.proxy import ridge

    r1 = proxy.xty.shape[1]
    lower = np.asarray(jax.vmap(lambda v: ridge.unpack(v, r1))(proxy.xtx), np.float64)[:, :r1, :r1]  # packed stats
    xtx = np.tril(lower) + np.swapaxes(np.tril(lower, -1), 1, 2)
    xty = np.asarray(proxy.xty, np.float64)
    xv, yv = np.asarray(proxy.xv, np.float64), np.asarray(proxy.yv)
    xf, yf = np.asarray(proxy.xf, np.float64), np.asarray(proxy.yf)
    rows, start, sizes = np.asarray(proxy.rows), np.asarray(proxy.start), np.asarray(proxy.sizes)
    lam, temp, c = proxy.cfg.lam, proxy.cfg.temperature, proxy.num_classes
    k = len(sizes)

    def accuracy(a: np.ndarray, b: np.ndarray, n: int) -> float:
        if n == 0:
            return 1.0 / c
        w = np.linalg.solve(a + lam * np.eye(len(a)), b)
        logits = temp * xv @ w
        top = logits >= logits.max(1, keepdims=True)
        return float((top[np.arange(len(yv)), yv] / top.sum(1)).mean())  # ties share credit, as jaxsel's

    width = k + 2 if features is None else features.size + 3 * k

    class SelectionEnv(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, (width,), np.float32)
        action_space = gym.spaces.Discrete(k)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.taken, self.chosen, self.picks = np.zeros(k, np.int64), 0, 0
            self.a, self.b, self.score = np.zeros_like(xtx[0]), np.zeros_like(xty[0]), 1.0 / c
            return self._obs(), {}

        def _obs(self):
            if features is None:
                return np.concatenate([self.taken / sizes, [self.chosen / budget, self.picks / k]]).astype(np.float32)
            state = np.stack([self.taken / sizes, np.full(k, self.chosen / budget), np.full(k, self.picks / max_steps)], 1)
            return np.concatenate([state, features], 1).astype(np.float32).ravel()

        def action_masks(self) -> np.ndarray:
            return self.taken < sizes

        def step(self, action):
            j = int(action)
            count = min(int(sizes[j] - self.taken[j]), budget - self.chosen)
            if count == sizes[j]:
                self.a, self.b = self.a + xtx[j], self.b + xty[j]
            else:  # the pick that reaches the budget: only its first rows in the within-cluster order
                idx = rows[start[j]:start[j] + count]
                self.a, self.b = self.a + xf[idx].T @ xf[idx], self.b + xf[idx].T @ np.eye(c)[yf[idx]]
            self.taken[j] += count
            self.chosen += count
            self.picks += 1
            score = accuracy(self.a, self.b, self.chosen)
            reward, self.score = 100.0 * (score - self.score), score
            done = self.chosen >= budget or not (self.taken < sizes).any()
            if done:
                record.append(score)
            return self._obs(), reward, done, False, {}

    return SelectionEnv


def deep_sets_policy(k: int, hidden: int = 64):
    """sb3-contrib's ``MaskableActorCriticPolicy`` with jaxsel's Deep Sets network
    (:mod:`jaxsel.agents.networks`) in PyTorch, for observations of :func:`numpy_selection_env`
    with ``features``: per-cluster encoder, mean and chosen-mean context, one logit per cluster,
    a value from the context. The same work per sample as jaxsel's PPO, so a timing compares the
    stacks rather than the networks."""
    import torch
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
    from torch import nn

    class DeepSets(nn.Module):
        def __init__(self, features: int):
            super().__init__()
            self.latent_dim_pi, self.latent_dim_vf, self.f = k, hidden, features
            self.enc1, self.enc2 = nn.Linear(features, hidden), nn.Linear(hidden, hidden)
            self.out1, self.out2 = nn.Linear(3 * hidden, hidden), nn.Linear(hidden, 1)
            self.val1 = nn.Linear(2 * hidden, hidden)

        def _context(self, x):
            obs = x.view(x.shape[0], k, self.f)
            h = torch.relu(self.enc2(torch.relu(self.enc1(obs))))
            chosen = obs[..., :1]
            ctx = torch.cat([h.mean(1), (h * chosen).sum(1) / chosen.sum(1).clamp(min=1.0)], 1)
            return h, ctx

        def forward_actor(self, x):
            h, ctx = self._context(x)
            w = self.out1.weight  # (hidden, 3 hidden): [h_k, ctx] @ W split as in jaxsel
            pre = h @ w[:, :hidden].T + (ctx @ w[:, hidden:].T + self.out1.bias)[:, None]
            return self.out2(torch.relu(pre))[..., 0]

        def forward_critic(self, x):
            return torch.relu(self.val1(self._context(x)[1]))

        def forward(self, x):
            return self.forward_actor(x), self.forward_critic(x)

    class Policy(MaskableActorCriticPolicy):
        def _build_mlp_extractor(self) -> None:
            self.mlp_extractor = DeepSets(self.features_dim // k)

        def _build(self, lr_schedule) -> None:
            super()._build(lr_schedule)
            self.action_net = nn.Identity()  # the network already gives one logit per cluster
            self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    return Policy


def torch_small_finetune(folder, num_labels: int, splits: dict, *, epochs: int = 3, batch_size: int = 16,
                         lr: float = 1e-4, warmup: float = 0.1, threads: int | None = None) -> dict:
    """A whole finetune the way a PyTorch user writes it, with jaxsel's protocol: MiniLM +
    classification head without dropout, AdamW (weight decay 0.01) after clipping at 1.0, linear warmup then
    cosine decay, validation accuracy after every epoch, the best epoch's weights tested.
    ``splits``: {"train"|"validation"|"test": (token id lists, labels (n,))}, each batch padded to
    its longest row. Returns wall seconds (model load included) and test accuracy."""
    import torch
    import transformers
    t0 = time.perf_counter()
    torch.manual_seed(0)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    model = transformers.BertForSequenceClassification.from_pretrained(str(folder), num_labels=num_labels,
                                                                       **NO_DROPOUT)
    ids, y = splits["train"]
    steps = epochs * -(-len(ids) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = transformers.get_cosine_schedule_with_warmup(opt, max(1, int(warmup * steps)), steps)

    def batch(rows_ids, rows):
        width = max(len(rows_ids[i]) for i in rows)
        tok, mask = np.zeros((len(rows), width), np.int64), np.zeros((len(rows), width), np.int64)
        for r, i in enumerate(rows):
            tok[r, :len(rows_ids[i])], mask[r, :len(rows_ids[i])] = rows_ids[i], 1
        return torch.from_numpy(tok), torch.from_numpy(mask)

    def accuracy(split) -> float:
        s_ids, s_y = splits[split]
        model.eval()
        pred = []
        with torch.no_grad():
            for b in range(0, len(s_ids), 64):
                tok, mask = batch(s_ids, range(b, min(b + 64, len(s_ids))))
                pred.append(model(input_ids=tok, attention_mask=mask).logits.argmax(-1).numpy())
        model.train()
        return float((np.concatenate(pred) == np.asarray(s_y)).mean())

    rng = np.random.default_rng(0)
    best, best_state = -1.0, None
    for _ in range(epochs):
        order = rng.permutation(len(ids))
        for b in range(0, len(ids), batch_size):
            rows = order[b:b + batch_size]
            tok, mask = batch(ids, rows)
            loss = model(input_ids=tok, attention_mask=mask, labels=torch.from_numpy(np.asarray(y)[rows])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        val = accuracy("validation")
        if val > best:
            best, best_state = val, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {"seconds": time.perf_counter() - t0, "test_accuracy": accuracy("test"), "validation_accuracy": best}
