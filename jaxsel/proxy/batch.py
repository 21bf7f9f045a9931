"""Batches of subsets: validation outside jit, and scoring with the batch axis sharded over
every device (``shard_map`` on a 1-D ``batch`` mesh; each device vmaps or maps its slice)."""

from __future__ import annotations

from functools import partial

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxsel.errors import JaxselError


def check_masks(masks, k: int, max_clusters: int | None = None, *, sizes=None,
                partial_cap: int | None = None, quota: int = 0, partials: int = 1) -> np.ndarray:
    """Validate a (B, K) or (K,) batch of subsets outside jit: bool masks (or 0/1 when ``sizes``
    is not given), or, with ``sizes`` (K,), int takes holding whole chunks of ``quota`` rows
    (0: whole clusters) but for at most ``partials`` clusters, whose partial chunks hold at most
    ``partial_cap`` rows. Returns (B, K) bool or int32; raises JaxselError naming the fault."""
    if isinstance(masks, jax.core.Tracer):
        raise JaxselError("score_batch checks its subsets' values and compiles itself: call it outside jax.jit "
                          "(inside a traced function, jax.vmap(proxy.score) scores a batch)")
    masks = np.asarray(masks)
    if masks.ndim == 1:
        masks = masks[None]
    if masks.ndim != 2 or masks.shape[1] != k:
        raise JaxselError(f"masks must have shape (B, {k}) for {k} clusters, got {masks.shape}")
    if masks.dtype != bool and sizes is None:
        if not np.isin(masks, (0, 1)).all():
            raise JaxselError("masks must be boolean (or 0/1)")
        masks = masks.astype(bool)
    if masks.dtype != bool:
        if not np.issubdtype(masks.dtype, np.integer):
            raise JaxselError(f"subsets must be bool masks or int takes, got dtype {masks.dtype}")
        sizes = np.asarray(sizes)
        if (masks < 0).any() or (masks > sizes).any():
            raise JaxselError("a take must lie between 0 and its cluster's size")
        rest = np.where(masks >= sizes, 0, masks if quota == 0 else masks % quota)
        part = rest > 0
        if (part.sum(1) > partials).any():
            unit = "cluster" if quota == 0 else f"chunk of {quota} rows"
            raise JaxselError(f"a take may hold at most {'one' if partials == 1 else partials} {unit}"
                              f"{'' if partials == 1 else 's'} in part (integer subsets are takes, rows per "
                              f"cluster; a bool mask takes whole clusters"
                              + ("; for 0/1 masks pass masks.astype(bool)" if np.isin(masks, (0, 1)).all() else "")
                              + ")")
        if partial_cap is not None and (rest > partial_cap).any():
            raise JaxselError(f"a partly taken chunk holds {rest.max()} rows, more than this proxy's "
                              f"partial_cap={partial_cap}")
        masks = masks.astype(np.int32)
    if max_clusters is not None and ((masks > 0).sum(1) > max_clusters).any():
        raise JaxselError(f"a mask holds {(masks > 0).sum(1).max()} clusters, more than this proxy's "
                          f"max_clusters={max_clusters}")
    return masks


def mesh() -> jax.sharding.Mesh:
    """A 1-D mesh named ``batch`` over all devices."""
    return jax.sharding.Mesh(np.array(jax.devices()), ("batch",))


@partial(jax.jit, static_argnames=("sequential", "chunk"))
def _score_sharded(proxy, masks: jax.Array, sequential: bool, chunk: int):
    """Each device scores its slice of the batch: vmapped ``chunk`` masks at a time (a
    ``lax.map`` over chunks, so memory does not grow with the batch), or one mask after another."""

    def local(ms):
        return jax.lax.map(proxy.score, ms) if sequential else jax.lax.map(proxy.score, ms, batch_size=chunk)

    m = mesh()
    out = jax.shard_map(local, mesh=m, in_specs=P("batch"), out_specs=P("batch"), check_vma=False)(masks)
    # replicated on every device: each process (with several, jax.distributed) can read all scores
    return jax.lax.with_sharding_constraint(out, NamedSharding(m, P()))


def unpad(b: int, scores):
    """The first ``b`` rows of every array of ``scores``, cut on the host and put back with
    ``jax.device_put``: ``a[:b]`` on a device array, or ``jnp.asarray`` of the cut, compiles a
    program for each new b (every step of a greedy search scores fewer candidates)."""
    return jax.tree.map(lambda a: jax.device_put(np.asarray(a)[:b]), scores)


def padded_batch(b: int, chunk: int, devices: int, sequential: bool = False) -> int:
    """The batch size ``b`` subsets are scored at: the next power of two up to ``chunk`` (vmapped)
    or up to 8 (one after another, ``sequential``), else the next multiple of it; then a multiple of
    ``devices``. Searches score batches whose size changes every step (greedy's candidates shrink as
    clusters run out), and each new size compiled the scorer again (greedy at K = 2,048 spent
    minutes compiling): rounded up, a few programs serve every size, and a small batch pays at
    most twice its own work (a sequential scorer trains every padding row)."""
    step = 8 if sequential else chunk
    size = 1 << max(0, (b - 1).bit_length()) if b <= step else -(-b // step) * step
    return -(-size // devices) * devices


def score_batch(proxy, subsets):
    """``proxy``'s :class:`~jaxsel.proxy.base.Scores` of a (B, K) batch of masks or takes (checked
    by :func:`check_masks`), padded with empty subsets to :func:`padded_batch` and sharded over the
    devices."""
    masks = proxy.check_takes(subsets)
    mode = proxy.cfg.batch_mode
    if mode == "auto":  # XLA:CPU runs vmapped small training loops slower than one after another
        mode = "map" if proxy.sequential_on_cpu and jax.default_backend() == "cpu" else "vmap"
    b = masks.shape[0]
    pad = padded_batch(b, proxy.batch_chunk, jax.device_count(), mode == "map") - b
    if pad:
        masks = np.concatenate([masks, np.zeros((pad, masks.shape[1]), masks.dtype)])
    masks = jax.device_put(masks, NamedSharding(mesh(), P("batch")))
    return unpad(b, _score_sharded(proxy, masks, mode == "map", proxy.batch_chunk))
