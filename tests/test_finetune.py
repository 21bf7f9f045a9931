import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsel import cli, finetune
from jaxsel.models import classifier, llama
from jaxsel.errors import JaxselError

TINY = dict(model="tiny-bert", epochs=2, batch_size=8, max_length=32, lr=1e-3, min_steps=0)  # epochs alone


def test_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    assert finetune.macro_f1(y, p, 4) == pytest.approx(f1_score(y, p, average="macro"))
    # a class in neither the labels nor the predictions (a test split without it) had scored F1 = 0
    y, p = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    assert finetune.macro_f1(y, p, 3) == pytest.approx(f1_score(y, p, average="macro"))
    assert finetune.macro_f1(y, y, 3) == 1.0


def test_batches_cover_every_row_once_and_bucket_lengths():
    lengths = np.random.default_rng(0).integers(1, 100, 1000)
    out = finetune.batches(lengths, 32, np.random.default_rng(1))
    rows = np.concatenate(out)
    assert sorted(rows.tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in out])
    assert spread < np.ptp(lengths) / 4  # batches hold similar lengths


@pytest.mark.parametrize("batch_size, accum, examples, rows", [
    (16, 1, 100, 16), (16, 1, 9, 16), (16, 1, 8, 8), (100_000, 1, 8, 8), (16, 2, 25, 16), (16, 2, 5, 4), (16, 1, 1, 1)])
def test_step_batch_is_the_power_of_two_holding_a_small_subset(batch_size, accum, examples, rows):
    assert finetune.step_batch(finetune.FinetuneConfig(batch_size=batch_size, grad_accum=accum), examples) == rows


def test_a_batch_size_above_the_subset_trains_as_the_subset_size(table_file, tmp_cache):
    from jaxsel import data
    dd = data.load(str(table_file))
    small, huge = (finetune.finetune(dd, np.arange(8), finetune.FinetuneConfig(**{**TINY, "batch_size": b}),
                                     progress=False) for b in (8, 100_000))
    for key in ("test_accuracy", "val_accuracy_per_epoch", "steps", "tokens_seen"):
        assert huge[key] == small[key]
    # gradient accumulation (as transformers'): a step sums grad_accum micro-batches of batch_size rows,
    # the same training as one batch of their product (the help said the step's batch was split)
    accum = finetune.finetune(dd, np.arange(40), finetune.FinetuneConfig(**{**TINY, "batch_size": 4, "grad_accum": 2}),
                              progress=False)
    whole = finetune.finetune(dd, np.arange(40), finetune.FinetuneConfig(**{**TINY, "batch_size": 8}), progress=False)
    assert accum["steps"] == whole["steps"] == 2 * 5 and accum["tokens_seen"] == whole["tokens_seen"]
    assert accum["train_loss_per_epoch"] == pytest.approx(whole["train_loss_per_epoch"], rel=1e-4)


@pytest.mark.assets
def test_tiny_run_reports_metrics(table_file, tmp_cache, tmp_path):
    from jaxsel import data, metrics
    dd = data.load(str(table_file))
    with metrics.logging_to(tmp_path / "logs"), metrics.scope("cell"):
        m = finetune.finetune(dd, np.arange(40), finetune.FinetuneConfig(**TINY), progress=False)
    assert m["examples_used"] == 40 and m["epochs_run"] == 2 and m["steps"] == 2 * 5
    assert 0 <= m["test_accuracy"] <= 1 and m["tokens_seen"] > 0
    # --log-dir: one line per epoch, at its last optimizer step, with the epoch's validation accuracy
    lines = [json.loads(x) for x in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [(x["stage"], x["step"]) for x in lines] == [(f"cell/finetune {TINY['model']}", 5 * e) for e in (1, 2)]
    assert [x["validation_accuracy"] for x in lines] == m["val_accuracy_per_epoch"]
    assert all(x["loss"] > 0 and x["tokens_per_s"] > 0 and x["learning_rate"] >= 0 for x in lines)
    with pytest.raises(JaxselError, match="empty"):
        finetune.finetune(dd, np.arange(0), finetune.FinetuneConfig(**TINY), progress=False)


X64 = """
import json, warnings
import numpy as np
warnings.filterwarnings("error", "Explicitly requested dtype", UserWarning)  # a 64-bit array where 32 bits run
from jaxsel import data, finetune
m = finetune.finetune(data.load(PATH), np.arange(40), finetune.FinetuneConfig(model="tiny-bert", epochs=1, batch_size=8,
                      max_length=32, lr=1e-3, min_steps=0), progress=False)
out = json.dumps([m["train_loss_per_epoch"], m["val_accuracy_per_epoch"], m["test_accuracy"]])
"""


@pytest.mark.assets
def test_same_finetune_with_jax_enable_x64(table_file, tmp_cache):
    """JAX_ENABLE_X64=1 finetunes as float32 does, to the bit (``jaxsel.precision.in_32_bits``): with
    it on, optax's scalars (Adam's bias correction) were float64 and the first epoch's loss differed."""
    from conftest import with_and_without_x64
    with_x64, without = with_and_without_x64(X64.replace("PATH", repr(str(table_file))))
    assert with_x64 == without


@pytest.mark.assets
def test_min_steps_train_small_subsets_longer(table_file, tmp_cache):
    """The fair protocol: a subset too small for ``min_steps`` in ``epochs`` gets more epochs (5
    steps per epoch here: 40 rows in batches of 8); early stopping waits until ``min_steps``."""
    from jaxsel import data
    dd = data.load(str(table_file))
    m = finetune.finetune(dd, np.arange(40), finetune.FinetuneConfig(**{**TINY, "min_steps": 23, "patience": 99}),
                          progress=False)
    assert m["epochs_run"] == 5 and m["steps"] == 25 and m["examples_seen"] == 5 * 40
    at_least = finetune.finetune(dd, np.arange(40), finetune.FinetuneConfig(**{**TINY, "min_steps": 40, "patience": 1}),
                                 progress=False)
    assert at_least["steps"] == 40  # 8 epochs, whatever validation did meanwhile
    stopped = finetune.finetune(dd, np.arange(40), finetune.FinetuneConfig(**{**TINY, "epochs": 60, "min_steps": 10,
                                                                             "patience": 1}), progress=False)
    assert 10 <= stopped["steps"] < 300 and stopped["steps"] == 5 * stopped["epochs_run"]
    # the default since 2026-12-07: 100 steps (5% of 2,000 rows at batch 32: 25 epochs of 4), capped by max_steps
    assert finetune.planned_steps(finetune.FinetuneConfig(), 100) == (100, 25)
    assert finetune.planned_steps(finetune.FinetuneConfig(max_steps=30), 100) == (30, 25)
    assert finetune.planned_steps(finetune.FinetuneConfig(), 5000) == (471, 3)  # large subsets: epochs alone
    assert cli.build_parser().parse_args(["finetune"]).min_steps == 100


@pytest.mark.assets
def test_resume_ends_with_the_same_metrics(table_file, tmp_path):
    from jaxsel import data
    dd = data.load(str(table_file))
    cfg = finetune.FinetuneConfig(**{**TINY, "epochs": 3, "patience": 9})
    whole = finetune.finetune(dd, None, cfg, ckpt_dir=tmp_path / "a", progress=False)
    assert finetune.finetune(dd, None, cfg, ckpt_dir=tmp_path / "b", progress=False, stop_after_epochs=1) is None
    resumed = finetune.finetune(dd, None, cfg, ckpt_dir=tmp_path / "b", resume=True, progress=False)
    for key in ("test_accuracy", "validation_accuracy", "val_accuracy_per_epoch", "train_loss_per_epoch",
                "tokens_seen", "steps"):
        assert resumed[key] == whole[key]
    assert len(whole["train_loss_per_epoch"]) == 3 and whole["train_loss_per_epoch"][-1] < whole["train_loss_per_epoch"][0]


@pytest.mark.assets
def test_the_rows_are_a_set_and_plans_are_drawn_an_epoch_at_a_time(table_file, tmp_path, capsys):
    """Break-it round 45: the same rows in another order trained otherwise (the shuffle permuted the
    positions as given: test accuracy 0.70 / 0.58 / 0.75 for one set of rows); every epoch's batches
    were planned up front (7.8 GB and no output for --min-steps 100000000). A run stopped before its
    first checkpoint said "--resume" though nothing was there to resume."""
    from jaxsel import data
    dd = data.load(str(table_file))
    cfg = finetune.FinetuneConfig(**{**TINY, "min_steps": 12, "patience": 9})
    rows = np.arange(0, 48, 2)
    sorted_run = finetune.finetune(dd, rows, cfg, progress=False)
    shuffled = finetune.finetune(dd, np.random.default_rng(5).permutation(rows).astype(np.int32), cfg, progress=False)
    for key in ("test_accuracy", "val_accuracy_per_epoch", "train_loss_per_epoch", "steps", "padded_lengths"):
        assert shuffled[key] == sorted_run[key], key
    plans = finetune.epoch_plans(np.arange(30) % 7 + 3, 8, seed=1)  # the same draws as batches() from one generator
    rng = np.random.default_rng(1)
    for _ in range(3):
        assert all((a == b).all() for a, b in zip(next(plans), finetune.batches(np.arange(30) % 7 + 3, 8, rng)))
    # stopped before a checkpoint: the folder holds its marker only, nothing to resume
    from jaxsel.checkpoint import MARKER
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / MARKER).write_text("")
    assert not cli._checkpoints_held(tmp_path / "ck")
    (tmp_path / "ck" / "1").mkdir()
    assert cli._checkpoints_held(tmp_path / "ck")


@pytest.mark.assets
def test_resume_refuses_another_training_set(table_file, tmp_path):
    """A checkpoint resumes only the rows and the dataset it was written for: as many other rows,
    or the same rows of another dataset, are refused instead of continuing the first run's weights."""
    from jaxsel import data
    dd = data.load(str(table_file))
    cfg = finetune.FinetuneConfig(**{**TINY, "epochs": 3, "patience": 9})
    rows = np.arange(0, 20)
    assert finetune.finetune(dd, rows, cfg, ckpt_dir=tmp_path / "c", progress=False, stop_after_epochs=1) is None
    for other, idx in ((dd, rows + 20), (data.load(str(table_file), seed=5), rows)):
        with pytest.raises(JaxselError, match="another run configuration"):
            finetune.finetune(other, idx, cfg, ckpt_dir=tmp_path / "c", resume=True, progress=False)
    assert finetune.finetune(dd, rows, cfg, ckpt_dir=tmp_path / "c", resume=True, progress=False)["epochs_run"] == 3


def test_every_schedule_trains():
    """Warmup starts at 0, so a finetune of one step (one batch, one epoch) used to take no step at
    all and test the initial weights; now it steps at the full rate. Longer schedules keep their
    warmup from 0 and step at a positive rate everywhere after it."""
    for schedule in ("cosine", "linear"):
        cfg = finetune.FinetuneConfig(lr=1e-4, warmup=0.1, schedule=schedule)
        assert finetune.learning_rates(cfg, 1).tolist() == [np.float32(1e-4)]
        for total in (2, 3, 10, 57):
            lrs = finetune.learning_rates(cfg, total)
            assert lrs[0] == 0.0 and (lrs[1:] > 0).all() and lrs.max() == np.float32(1e-4)
            # warmup 0 is none: the first step had been taken at rate 0 (half of a two-step finetune)
            cold = finetune.learning_rates(finetune.FinetuneConfig(lr=1e-4, warmup=0.0, schedule=schedule), total)
            assert cold[0] == np.float32(1e-4) and (cold[1:] < cold[0]).all() and (cold > 0).all()


def test_unit_rate_optimizer_times_schedule_is_optax_scheduled_adamw():
    """The clipped unit-rate AdamW scaled by the host-side schedule equals optax's clipped AdamW
    with that schedule, step by step."""
    import optax
    cfg = finetune.FinetuneConfig(lr=3e-3, warmup=0.25, clip=0.5, weight_decay=0.1)
    total = 6
    lrs = finetune.learning_rates(cfg, total)
    warm = int(cfg.warmup * total)
    sched = optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warm),
                                  optax.cosine_decay_schedule(cfg.lr, total - warm)], [warm])
    ref_tx = optax.chain(optax.clip_by_global_norm(cfg.clip), optax.adamw(sched, weight_decay=cfg.weight_decay))
    tx = finetune.optimizer(cfg.clip, cfg.weight_decay)
    rng = np.random.default_rng(0)
    ours = ref = {"w": rng.standard_normal((5, 3)).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    state, ref_state = tx.init(ours), ref_tx.init(ref)
    step = jax.jit(finetune.apply_scaled, static_argnums=0)
    for i in range(total):
        g = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32), ours)
        ours, state = step(tx, g, state, ours, lrs[i])
        updates, ref_state = ref_tx.update(g, ref_state, ref)
        ref = optax.apply_updates(ref, updates)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_clip_by_global_norm_matches_optax():
    """jaxsel's clipping (one scalar factor) gives optax's clipped updates (a division per element)
    to one rounding, for global norms above the limit (scaled to it) and below (unchanged)."""
    import optax
    rng = np.random.default_rng(1)
    g = {"w": rng.standard_normal((7, 5)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    norm = lambda tree: float(np.sqrt(sum(np.sum(np.asarray(t, np.float64) ** 2) for t in jax.tree.leaves(tree))))
    for max_norm in (0.3, 100.0):
        ours, _ = finetune.clip_by_global_norm(max_norm).update(g, optax.EmptyState())
        ref, _ = optax.clip_by_global_norm(max_norm).update(g, optax.EmptyState())
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-7)
        assert norm(ours) == pytest.approx(min(max_norm, norm(g)), rel=1e-6)


def lengths_dataset(tmp_path):
    """A DatasetDict of texts of 5 to 20 words (several padded lengths), split by a column."""
    from conftest import WORDS

    from jaxsel import data
    rng = np.random.default_rng(0)
    split = lambda i: "train" if i % 10 < 8 else "validation" if i % 10 == 8 else "test"
    lines = ["text,label,split"] + [f"{' '.join(rng.choice(WORDS[lab].split(), 5 * (1 + i % 4)))},{lab},{split(i)}"
                                    for i, lab in enumerate(list(WORDS) * 60)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    return data.load(str(tmp_path / "d.csv"), split_col="split")


@pytest.mark.assets
def test_each_step_shape_compiles_once_across_finetunes(tmp_path, tmp_cache, monkeypatch):
    """A run's finetunes share their compiled steps: the bound train step (one for both finetunes)
    and eval_step compile once per batch shape they trace (uncommitted first-step parameters used to
    compile the first shape twice in every finetune), and a second finetune of another size reuses them."""
    shapes = {"train": [], "eval": []}
    train_step, eval_step, bind = finetune.train_step, finetune.packed_eval_step, finetune.flat_train_step
    bind.cache_clear()
    eval_step.clear_cache()
    bound = []
    monkeypatch.setattr(finetune, "flat_train_step", lambda *a: bound.append(bind(*a)) or bound[-1])

    def traced(params, rest, opt_state, lr, ids, *args, **kw):  # runs when the bound step traces a shape
        shapes["train"].append(ids.shape)
        return train_step(params, rest, opt_state, lr, ids, *args, **kw)

    def evaluated(params, rest, ids, *args, **kw):
        shapes["eval"].append(ids.shape)
        return eval_step(params, rest, ids, *args, **kw)
    monkeypatch.setattr(finetune, "train_step", traced)
    monkeypatch.setattr(finetune, "packed_eval_step", evaluated)
    dd = lengths_dataset(tmp_path)
    for rows, seed in ((np.arange(40), 0), (np.arange(40, 104), 1)):
        finetune.finetune(dd, rows, finetune.FinetuneConfig(**{**TINY, "seed": seed}), progress=False)
        assert len(set(shapes["train"])) == len(shapes["train"])  # each shape traced once
        assert (bound[-1]._cache_size(), eval_step._cache_size()) == (len(shapes["train"]), len(set(shapes["eval"])))
    assert len({id(b) for b in bound}) == 1
    assert len(shapes["train"]) > 1  # the data spans several bucket lengths


def test_packed_evaluation_equals_one_text_per_row():
    """A BERT classifier over texts packed several to a row gives each text the logits it gets alone
    (to float rounding), so packed evaluation scores what padded batches score."""
    from jaxsel import embed
    from jaxsel.models import bert
    rngs = nnx.Rngs(0)
    model = classifier.BertClassifier(bert.Bert(bert.BertConfig(vocab_size=50, hidden=32, layers=2, heads=2,
                                                                intermediate=64), rngs=rngs), 3, rngs=rngs)
    rng = np.random.default_rng(0)
    ids = [list(rng.integers(1, 50, rng.integers(2, 48))) for _ in range(70)]
    calls = embed.packed_calls(np.array([len(x) for x in ids]), 48, batch_tokens=256)
    assert max(len(row) for _, _, rows in calls for row in rows) > 2  # rows hold several texts
    alone = np.asarray(model(*map(jnp.asarray, embed.pad_batch(ids, range(len(ids)), len(ids), 48))))
    for width, per_call, rows in calls:
        packed = np.asarray(model.packed(*map(jnp.asarray, embed.pack_batch(ids, rows, per_call, width))))
        for r, row in enumerate(rows):
            np.testing.assert_allclose(packed[r, :len(row)], alone[row], atol=1e-5)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    y = rng.integers(0, 3, len(ids))
    cfg = finetune.FinetuneConfig(model="tiny-bert", batch_size=8, max_length=48)
    assert finetune.evaluate(params, rest, graphdef, ids, y, cfg, 3, packed=True) == \
        finetune.evaluate(params, rest, graphdef, ids, y, cfg, 3, packed=False)


def test_decoder_classifier_scores_label_words():
    cfg = llama.LlamaConfig(vocab_size=40, hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32)
    dec = llama.Llama(cfg, rngs=nnx.Rngs(0))
    clf = classifier.DecoderClassifier(dec, [5, 9, 11], rngs=nnx.Rngs(0))
    ids = jax.numpy.array([[3, 4, 6, 0, 0], [7, 8, 1, 2, 3]])
    mask = jax.numpy.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    got = np.asarray(clf(ids, mask))
    full = np.asarray(dec(ids, mask))
    np.testing.assert_allclose(got[0], full[0, 2, [5, 9, 11]], atol=1e-5)
    np.testing.assert_allclose(got[1], full[1, 4, [5, 9, 11]], atol=1e-5)


SHARDED = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, numpy as np, optax
    from flax import nnx
    from jaxsel import finetune
    from jaxsel.models import bert, classifier
    assert jax.device_count() == 4
    model = classifier.BertClassifier(bert.Bert(bert.BertConfig(vocab_size=100, hidden=16, layers=1, heads=2,
                                                                intermediate=32)), 3, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.sgd(0.5)  # linear in the gradient: Adam would amplify rounding in near-zero gradients
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, (2, 8, 12)).astype(np.int32)
    mask = (rng.random((2, 8, 12)) < 0.9).astype(np.int32); mask[..., 0] = 1
    y = rng.integers(0, 3, (2, 8)).astype(np.int32); w = np.ones((2, 8), np.float32)
    copy = lambda t: jax.tree.map(lambda a: np.array(a), t)
    step = lambda *a: finetune.train_step(*a, graphdef=graphdef, tx=tx)
    p1, _, l1 = step(copy(params), rest, tx.init(copy(params)), 1.0, ids, mask, y, w)
    sh, _ = finetune.data_sharding()
    p4, _, l4 = step(copy(params), rest, tx.init(copy(params)), 1.0, *[jax.device_put(a, sh) for a in (ids, mask, y, w)])
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert abs(float(l1) - float(l4)) < 1e-6
    print("sharded step ok")
""")


def test_sharded_step_equals_single_device():
    p = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "sharded step ok" in p.stdout


@pytest.mark.assets
def test_a_diverged_finetune_stops_instead_of_testing_nan_weights(table_file, tmp_cache, capsys):
    """lr 1e9 made the weights NaN in epoch 1's last step: the run went on to test them (one class
    predicted, accuracy 1/3 on three classes) and exited 0. Now one line names the divergence."""
    from jaxsel import data
    dd = data.load(str(table_file))
    with pytest.raises(JaxselError, match=r"diverged in epoch 1 .*weights NaN or inf.*lower the learning rate"):
        finetune.finetune(dd, np.arange(40), finetune.FinetuneConfig(**{**TINY, "lr": 1e9}), progress=False)
    assert cli.main(["finetune", str(table_file), "--model", "tiny-bert", "--random-fraction", "0.2", "--lr", "1e9",
                     "--max-length", "32", "--out", str(tmp_cache / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("jaxsel: error: finetuning tiny-bert diverged") and not (tmp_cache / "f" / "metrics.json").exists()


@pytest.mark.assets
def test_finetune_warns_of_classes_its_subset_misses(table_file, tmp_cache, capsys):
    """select warned of a class its selection misses; finetune said nothing, and printed 'on 1 examples'."""
    from jaxsel import data
    assert cli.main(["finetune", str(table_file), "--model", "tiny-bert", "--random-fraction", "0.021", "--epochs", "1",
                     "--min-steps", "0", "--max-length", "32", "--out", str(tmp_cache / "f")]) == 0
    out, err = capsys.readouterr()
    assert "tiny-bert on 1 example (random 0.021" in out
    assert json.loads((tmp_cache / "f" / "metrics.json").read_text())["steps"] == 1  # --min-steps 0: one epoch of one
    absent = err.split("warning: the training subset (1 example) holds no example of classes ")[1].split(";")[0]
    assert sum(name in absent for name in data.load(str(table_file))["train"].features["label"].names) == 2
    # a train split without a class its validation and test hold (a DatasetDict of one's own): said too (round 45)
    dd = data.load(str(table_file))
    y = np.asarray(dd["train"]["label"])
    no_last = data.derive(dd, {"train": np.flatnonzero(y != y.max())}, tag="no last class")
    import warnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        finetune.finetune(no_last, None, finetune.FinetuneConfig(**{**TINY, "min_steps": 0}), progress=False)
    name = dd["train"].features["label"].names[y.max()]
    assert [str(w.message) for w in seen if "holds no example" in str(w.message)] == \
        [f"the training split ({(y != y.max()).sum()} examples) holds no example of class {name!r}; a model finetuned "
         "on it cannot predict that class"]
    with warnings.catch_warnings(record=True) as seen:  # a subset missing a class only the train split holds
        warnings.simplefilter("always")
        y_val, y_test = (np.asarray(no_last[s]["label"]) for s in ("validation", "test"))
        finetune.finetune(data.derive(no_last, {"validation": np.flatnonzero(y_val != 0),
                                                "test": np.flatnonzero(y_test != 0)}, tag="no first class"),
                          np.flatnonzero(np.asarray(no_last["train"]["label"]) != 0),
                          finetune.FinetuneConfig(**{**TINY, "min_steps": 0}), progress=False)
    first = dd["train"].features["label"].names[0]
    assert [str(w.message).split(" holds ")[1].split(";")[0] for w in seen if "holds no example" in str(w.message)] \
        == [f"no example of classes {first!r}, {name!r}"]


def test_a_head_is_refused_for_bert_targets(capsys):
    """--head linear was ignored for BERT models (the same losses as the verbalizer) yet recorded
    and tagged the output folder as another experiment."""
    with pytest.raises(JaxselError, match="head applies to decoders"):
        finetune.FinetuneConfig(model="minilm", head="linear")
    assert cli.main(["finetune", "tweets", "--model", "tiny-bert", "--head", "linear"]) == 2
    assert "head applies to decoders" in capsys.readouterr().err


def test_cli_rejects_both_sources(table_file, capsys):
    assert cli.main(["finetune", str(table_file), "--selection", "x.json", "--random-fraction", "0.5"]) == 2
    assert "not both" in capsys.readouterr().err


def test_lora_starts_at_the_base_model_and_trains_only_adapters():
    import optax
    cfg = llama.LlamaConfig(vocab_size=40, hidden=16, layers=2, heads=2, kv_heads=1, intermediate=32)
    base = llama.Llama(cfg, rngs=nnx.Rngs(0))
    ids = jax.numpy.array([[3, 4, 6, 7]])
    before = np.asarray(base(ids))
    llama.add_lora(base, 4, rngs=nnx.Rngs(1))
    np.testing.assert_allclose(np.asarray(base(ids)), before, atol=1e-6)
    clf = classifier.DecoderClassifier(base, [5, 9], head="linear", rngs=nnx.Rngs(0))
    fcfg = finetune.FinetuneConfig(model="smollm2-135m", lora_rank=4)
    graphdef, params, rest = nnx.split(clf, finetune.trainable(fcfg), ...)
    names = {"/".join(map(str, path)) for path, _ in jax.tree_util.tree_leaves_with_path(params)}
    assert names and all("lora" in n or "head" in n for n in names)
    tx = optax.sgd(0.1)
    mask = np.ones((1, 2, 4), np.int32)
    new, _, _ = finetune.train_step(jax.tree.map(np.array, params), rest, tx.init(params), 1.0,
                                    np.array([[[3, 4, 6, 7], [1, 2, 3, 4]]]), mask, np.array([[0, 1]], np.int32),
                                    np.ones((1, 2), np.float32), graphdef=graphdef, tx=tx)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)))


def test_flops_per_token_counts_every_weight_and_only_trainable_gradients():
    """6N + attention for a full finetune (N: non-embedding weights), 4N + 2 x trainable under LoRA."""
    bcfg = dict(hidden=16, layers=2, heads=2, intermediate=32)
    from jaxsel.models import bert
    enc = bert.Bert(bert.BertConfig(**bcfg), rngs=nnx.Rngs(0))
    model = classifier.BertClassifier(enc, 3, rngs=nnx.Rngs(0))
    h, i, l = 16, 32, 2
    per_layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h  # q k v o, two FFN matmuls, two LayerNorms
    n = l * per_layer + 2 * h + (h * 3 + 3)  # + embedding LayerNorm + head (embedding tables excluded)
    cfg = finetune.FinetuneConfig(model="tiny-bert")
    assert finetune.flops_per_token(model, cfg, 10) == 6 * n + 12 * l * 10 * h
    dec = llama.Llama(llama.LlamaConfig(vocab_size=50, hidden=8, layers=1, heads=2, kv_heads=1, intermediate=16))
    lora = finetune.FinetuneConfig(model="smollm2-135m", lora_rank=2)
    llama.add_lora(dec, 2, rngs=nnx.Rngs(0))
    lm = classifier.DecoderClassifier(dec, [1, 2], head="verbalizer", rngs=nnx.Rngs(0))
    flat = nnx.to_flat_state(nnx.state(lm, nnx.Param))
    every = sum(int(np.prod(v.shape)) for p, v in flat if p[-1] != "embedding")
    trained = sum(int(np.prod(v.shape)) for p, v in nnx.to_flat_state(nnx.state(lm, finetune.trainable(lora)))
                  if p[-1] != "embedding")
    assert 0 < trained < every
    assert finetune.flops_per_token(lm, lora, 4) == 4 * every + 2 * trained + 12 * 1 * 4 * 8


def test_length_plan_is_the_cheapest_set_of_lengths():
    """Against every subset of the needed lengths (the longest always in): the plan's compiles at
    ``price`` each plus its padded tokens cost the least; price 0 keeps every length, inf one."""
    import itertools
    import math

    def cost(plan, needs, rows, price):
        return price * len(plan) + rows * sum(min(n for n in plan if n >= need) - need for need in needs)

    rng = np.random.default_rng(0)
    for _ in range(200):
        needs = rng.choice((8, 16, 24, 32, 48, 64, 96, 128), rng.integers(1, 25)).tolist()
        rows, price = int(rng.integers(1, 33)), float(rng.choice([0, 10, 100, 1_000, 100_000]))
        values = sorted(set(needs))
        best = min(cost((*sub, values[-1]), needs, rows, price)
                   for r in range(len(values)) for sub in itertools.combinations(values[:-1], r))
        plan = finetune.length_plan(needs, rows, price)
        assert plan == tuple(sorted(plan)) and plan[-1] == values[-1] and set(plan) <= set(values)
        assert cost(plan, needs, rows, price) == pytest.approx(best)
    assert finetune.length_plan([32, 8, 64, 8], 16, 0) == (8, 32, 64)
    assert finetune.length_plan([32, 8, 64, 8], 16, math.inf) == (64,)
    assert finetune.length_plan([], 16, 0) == ()


def test_length_buckets_price_by_setting_and_backend(monkeypatch):
    """``all`` prices a compile at 0 and ``one`` at inf everywhere; ``auto`` is ``all`` on CPU and
    :data:`finetune.ACCELERATOR_COMPILE_TOKENS` elsewhere."""
    price = lambda setting: finetune.compile_tokens(finetune.FinetuneConfig(length_buckets=setting))
    assert (price("all"), price("one"), price("auto")) == (0, float("inf"), 0)  # auto on CPU: every length
    monkeypatch.setattr(finetune.jax, "default_backend", lambda: "gpu")
    assert price("auto") == finetune.ACCELERATOR_COMPILE_TOKENS and price("all") == 0
    with pytest.raises(JaxselError, match="unknown finetune length_buckets 'some'"):
        finetune.FinetuneConfig(length_buckets="some")


@pytest.mark.assets
def test_length_buckets_set_the_lengths_the_train_step_compiles(tmp_path, tmp_cache, monkeypatch):
    """``one`` pads every training batch to the finetune's longest bucket (one compiled step),
    ``all`` to each batch's own (several); the steps see the same tokens, so the losses agree to
    float rounding, and ``padded_lengths`` names the lengths the train step traced."""
    dd = lengths_dataset(tmp_path)
    train_step, out = finetune.train_step, {}

    def traced(params, rest, opt_state, lr, ids, *args, **kw):
        lengths.add(ids.shape[-1])
        return train_step(params, rest, opt_state, lr, ids, *args, **kw)
    monkeypatch.setattr(finetune, "train_step", traced)
    for setting in ("all", "one"):
        finetune.flat_train_step.cache_clear()
        lengths = set()
        out[setting] = finetune.finetune(dd, np.arange(80), finetune.FinetuneConfig(**TINY, length_buckets=setting),
                                         progress=False)
        assert out[setting]["padded_lengths"] == sorted(lengths)
    assert len(out["all"]["padded_lengths"]) > 1 and out["one"]["padded_lengths"] == out["all"]["padded_lengths"][-1:]
    assert out["one"]["tokens_seen"] == out["all"]["tokens_seen"]
    assert out["one"]["train_loss_per_epoch"] == pytest.approx(out["all"]["train_loss_per_epoch"], rel=1e-4)


@pytest.mark.assets
def test_unpacked_evaluation_predicts_the_same_at_any_length_plan(tmp_path, tmp_cache, monkeypatch):
    """``evaluate`` without packing (decoders' path) pads its batches by the same plan: one length or
    each batch's bucket, the same predictions (a tiny BERT evaluated unpacked)."""
    from flax import nnx
    dd = lengths_dataset(tmp_path)
    cfg = finetune.FinetuneConfig(**TINY)
    model, encode = finetune.build(cfg, dd["train"].features["label"].names)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids, y = encode(dd["test"]["text"], cfg.max_length), np.asarray(dd["test"]["label"])
    eval_step, seen = finetune.eval_step, {}

    def traced(params, rest, ids, *args, **kw):
        seen[setting].add(ids.shape[-1])
        return eval_step(params, rest, ids, *args, **kw)
    monkeypatch.setattr(finetune, "eval_step", traced)
    out = {}
    for setting in ("all", "one"):
        seen[setting] = set()
        out[setting] = finetune.evaluate(params, rest, graphdef, ids, y, finetune.FinetuneConfig(**TINY, length_buckets=setting),
                                         len(dd["train"].features["label"].names), packed=False)
    assert out["one"] == out["all"] and len(seen["one"]) == 1 and len(seen["all"]) > 1
    assert seen["one"] == {max(seen["all"])}


def test_splits_must_share_train_label_names_and_hold_class_ids(table_file):
    """Round 28: a test split class-encoded on its own (another order of the same names) scored
    0.0 without a word, and -1 ("no label") in train trained silently (in validation it failed only
    after training)."""
    import datasets
    from jaxsel import data
    dd = data.load(str(table_file))
    names = dd["train"].features["label"].names
    other = datasets.ClassLabel(names=names[::-1])
    flipped = datasets.DatasetDict({**dd, "test": dd["test"].cast_column("label", other)})
    with pytest.raises(JaxselError, match="the test split's label names"):
        finetune.finetune(flipped, None, finetune.FinetuneConfig(**TINY), progress=False)
    unlabelled = dd["train"].cast_column("label", datasets.Value("int64")).map(
        lambda r, i: {"label": -1 if i == 0 else r["label"]}, with_indices=True)
    unlabelled = unlabelled.cast_column("label", dd["train"].features["label"])
    with pytest.raises(JaxselError, match="the train split's labels"):
        finetune.finetune(datasets.DatasetDict({**dd, "train": unlabelled}), None, finetune.FinetuneConfig(**TINY),
                          progress=False)
