import json
from pathlib import Path

import numpy as np
import pytest

from jaxsel import data, embed

GOLDEN = json.loads((Path(__file__).parent / "golden" / "minilm_l6_v2.json").read_text())
GOLDEN_LENGTH = 256  # the reference's sentence-transformers max_seq_length (GOLDEN["reference"])


@pytest.mark.assets
def test_tokenizer_matches_golden_ids():
    enc = embed.load_encoder("minilm")
    assert enc.tokenize(GOLDEN["sentences"], 256) == GOLDEN["token_ids"]


@pytest.mark.assets
def test_truncated_ids_equal_the_tokenizers_own_truncation_and_leave_it_unchanged():
    from tokenizers import Tokenizer
    from jaxsel import assets
    from jaxsel.models import tokens
    path = assets.path("minilm", embed.MINILM_DIR) / "tokenizer.json"
    texts = GOLDEN["sentences"] + ["a much longer sentence " * 20, ""]
    cached = tokens.load(path)
    for length in (4, 9, 64):
        ref = Tokenizer.from_file(str(path))
        ref.no_padding()
        ref.enable_truncation(length)
        assert tokens.ids(cached, texts, length) == [e.ids for e in ref.encode_batch(texts)]
    assert cached.truncation is None and cached.padding is None and tokens.load(path) is cached
    cut = tokens.ids(cached, texts, 12, template="Review: {text} Sentiment:")
    tail = cached.encode(" Sentiment:", add_special_tokens=False).ids
    cls, sep = cached.token_to_id("[CLS]"), cached.token_to_id("[SEP]")  # around the whole prompt, once
    assert all(len(x) <= 12 and x[-len(tail) - 1:-1] == tail and x[0] == cls and x[-1] == sep
               and x.count(cls) == x.count(sep) == 1 for x in cut)


@pytest.mark.assets
@pytest.mark.parametrize("batch_tokens", [1024, 16, 1, 100_000])
def test_minilm_matches_sentence_transformers(batch_tokens):
    """Packed rows (1024 tokens: every text in one call; 16 or 1: one row a call) give
    sentence-transformers' embeddings (the golden file)."""
    assert f"max_seq_length={GOLDEN_LENGTH}" in GOLDEN["reference"]
    got = embed.encode(GOLDEN["sentences"], batch_tokens=batch_tokens, max_length=GOLDEN_LENGTH, progress=False)
    want = np.array(GOLDEN["embeddings"], np.float32)
    err = np.abs(got - want).max(axis=1)
    assert got.dtype == np.float32 and got.shape == (8, 384)
    assert err.max() <= 1e-4, err


@pytest.mark.assets
def test_gelu_is_the_exact_gelu():
    """bert.gelu (the erf form) against the closed form x Phi(x) in float64 (scipy's normal CDF): to
    float32 rounding, except 1 + erf's cancellation below x = -5: under 1e-6 (PyTorch's form too), under
    3e-6 with jax < 0.10's float32 erf. The tanh approximation is off by up to 4.7e-4; ``tanh=True``
    computes it (against its closed form)."""
    import jax.numpy as jnp
    from scipy.stats import norm
    from jaxsel.models import bert
    x = np.concatenate([np.linspace(-12, 12, 4001), [-30.0, 0.0, 30.0]]).astype(np.float32)
    want = x.astype(np.float64) * norm.cdf(x.astype(np.float64))
    np.testing.assert_allclose(np.asarray(bert.gelu(jnp.asarray(x))), want, rtol=1e-6, atol=3e-6)
    np.testing.assert_allclose(np.asarray(bert.gelu(jnp.asarray(x, jnp.bfloat16)), np.float64), want, rtol=1e-2, atol=1e-2)
    x64 = x.astype(np.float64)  # the tanh form (gelu_new) against its own closed form
    tanh = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64 ** 3)))
    np.testing.assert_allclose(np.asarray(bert.gelu(jnp.asarray(x), tanh=True)), tanh, rtol=1e-6, atol=3e-6)
    assert 1e-4 < np.abs(tanh - want).max() < 1e-3


def test_packed_rows_embed_each_text_as_if_alone():
    """Many texts of mixed lengths packed several to a row (positions restarting, attention within
    each text) equal the same texts embedded one per row, to float rounding."""
    rng = np.random.default_rng(0)
    words = GOLDEN["sentences"][0].split() + GOLDEN["sentences"][3].split()
    texts = [" ".join(rng.choice(words, rng.integers(1, 30))) for _ in range(40)] + [" ".join(words * 4)]
    enc = embed.load_encoder("minilm")
    alone = np.concatenate([embed.encode([t], enc, progress=False) for t in texts])
    packed = embed.encode(texts, enc, progress=False)
    lengths = np.array([len(x) for x in enc.tokenize(texts, 256)])
    groups = embed.row_widths(lengths, 256)
    assert len(groups) == 2 and list(groups[max(groups)]) == [40]  # the long text gets its own rows
    assert max(len(r) for r in embed.pack(lengths[groups[min(groups)]], min(groups))) > 2
    np.testing.assert_allclose(packed, alone, atol=2e-6)


def test_trimmed_copies_give_what_whole_rows_give():
    """map_packed copying back only the entries the texts of a call's rows use (``trim``, the default
    off CPU) and the previous call's result read after the next is launched: the same embeddings as
    whole (R, W, d) blocks, and texts without tokens keep their rows."""
    from flax import nnx
    from jaxsel.models import bert
    net = bert.Bert(bert.BertConfig(vocab_size=50, hidden=16, layers=1, heads=2, intermediate=32), rngs=nnx.Rngs(0))
    fn = embed.encoder_of(net, None).forward
    rng = np.random.default_rng(0)
    ids = [list(rng.integers(1, 50, rng.integers(1, 40))) for _ in range(60)] + [[]]
    calls = embed.packed_calls(np.array([len(x) for x in ids]), 48, batch_tokens=256)
    assert len(calls) > 2 and 2 < max(len(row) for _, _, rows in calls for row in rows) < 16  # trimmed to 4..8
    whole, trimmed = (embed.map_packed(fn, ids, np.full((61, 16), 7.0, np.float32), 48, batch_tokens=256, trim=t)
                      for t in (False, True))
    np.testing.assert_array_equal(trimmed, whole)
    assert (whole[-1] == 7.0).all() and np.allclose(np.linalg.norm(whole[:-1], axis=1), 1.0, atol=1e-5)


@pytest.mark.assets
def test_bfloat16_packed_rows_stay_finite_and_close_to_float32():
    """bf16 used to turn a packed row's padding tokens (every key masked) into NaN, which spread to
    the row's texts; the mask is now added in float32."""
    texts = GOLDEN["sentences"] + ["hi", "a slightly longer sentence here"]
    got = embed.encode(texts, "minilm", dtype="bfloat16", max_length=16, progress=False)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, embed.encode(texts, max_length=16, progress=False), atol=2e-2)


def test_encode_rejects_what_is_not_a_list_of_strings():
    from jaxsel.errors import JaxselError
    with pytest.raises(JaxselError, match="not one string"):
        embed.encode("hello", embed.Encoder(None, None, 4))
    with pytest.raises(JaxselError, match=r"texts\[1\] is NoneType"):
        embed.encode(["a", None], embed.Encoder(None, None, 4))
    for bad in (0, -5, 2.5, "big", True):  # 0 silently meant the default, -5 one row a call, "big" a TypeError
        with pytest.raises(JaxselError, match="batch_tokens must be a positive integer"):
            embed.encode(["a"], embed.Encoder(None, None, 4), batch_tokens=bad)


def test_bad_max_length_or_dtype_is_a_one_line_error():
    from jaxsel.errors import JaxselError
    with pytest.raises(JaxselError, match="whole number of tokens, got '64'"):
        embed.encode(["a"], embed.Encoder(None, None, 4), max_length="64")
    with pytest.raises(JaxselError, match="got 64.5"):
        embed.encode(["a"], embed.Encoder(None, None, 4), max_length=64.5)
    with pytest.raises(JaxselError, match="unknown embedding dtype 'foo'"):
        embed.load_encoder("minilm", "foo")


def test_the_cache_file_names_a_non_default_dtype():
    assert embed.cache_file("f", "minilm", 64).name == "f-minilm-64.npz"
    assert embed.cache_file("f", "minilm", 64, "bfloat16").name == "f-minilm-64-bfloat16.npz"


def test_row_widths_share_rows_up_to_the_pack_width():
    lengths = np.array([3, 30, 0, 70, 10, 300, 64])
    groups = embed.row_widths(lengths, 256)
    assert {w: list(m) for w, m in groups.items()} == {64: [0, 1, 4, 6], 96: [3], 256: [5]}  # 0 tokens: left out
    assert {w: list(m) for w, m in embed.row_widths(np.array([3, 9]), 256).items()} == {16: [0, 1]}
    assert {w: list(m) for w, m in embed.row_widths(np.array([3, 30]), 32).items()} == {32: [0, 1]}


def test_pack_fills_rows_best_fit_decreasing():
    lengths = np.array([5, 3, 8, 2, 6, 1, 8, 4])
    rows = embed.pack(lengths, 8)
    assert sorted(i for r in rows for i in r) == list(range(8))
    assert all(lengths[r].sum() <= 8 for r in rows)
    assert rows == [[2], [6], [4, 3], [0, 1], [7, 5]]  # 8 | 8 | 6+2 | 5+3 | 4+1: the fewest rows, 5
    assert embed.pack(np.array([], np.int64), 8) == []
    with pytest.raises(ValueError, match="1..8"):
        embed.pack(np.array([9]), 8)


@pytest.mark.assets
def test_an_encoder_over_the_finetuners_bert_embeds_with_its_own_weights():
    import jax.numpy as jnp
    from jaxsel import assets, finetune
    from jaxsel.config import FinetuneConfig
    from jaxsel.models import tokens
    net, _ = finetune.build(FinetuneConfig(dtype="float32"), ["a", "b"])
    tok = tokens.load(assets.path("minilm", embed.MINILM_DIR) / "tokenizer.json")
    got = embed.encode(GOLDEN["sentences"], embed.encoder_of(net.encoder, tok), max_length=GOLDEN_LENGTH, progress=False)
    np.testing.assert_allclose(got, np.array(GOLDEN["embeddings"], np.float32), atol=1e-4)  # untrained: MiniLM
    net.encoder.emb_norm.bias[...] = net.encoder.emb_norm.bias[...] + jnp.float32(0.5)  # as a finetune would move it
    moved = embed.encode(GOLDEN["sentences"], embed.encoder_of(net.encoder, tok), max_length=GOLDEN_LENGTH, progress=False)
    assert np.abs(moved - got).max() > 1e-2


def test_bucket_length():
    assert [embed.bucket_length(n, 256) for n in (1, 8, 9, 33, 200, 256, 300)] == [8, 8, 16, 48, 256, 256, 256]
    assert embed.bucket_length(100, 100) == 100


def test_hash_embedder_deterministic_and_normalised():
    texts = ["good movie", "bad movie", "", "good movie"]
    a, b = embed.hash_encode(texts), embed.hash_encode(texts)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a[[0, 1, 3]], axis=1), 1.0, rtol=1e-5)
    assert np.all(a[2] == 0)
    assert np.array_equal(a[0], a[3])
    assert a[0] @ a[1] > 0.2  # shared word and n-grams


def test_embed_dataset_cache_round_trip(tmp_cache, table_file):
    dd = data.load(str(table_file))
    first = embed.embed_dataset(dd, "hash", progress=False)
    path = embed.cache_file(data.dataset_fingerprint(dd), "hash", 128)
    assert path.exists()
    second = embed.embed_dataset(dd, "hash", progress=False)
    for s in data.SPLITS:
        assert first[s].shape == (len(dd[s]), 384)
        assert np.array_equal(first[s], second[s])


def test_embed_dataset_embeds_only_the_splits_asked_for(tmp_cache, table_file, monkeypatch):
    """A run asks for train and validation (selection never uses the test split): only those are
    embedded and cached; a later call for every split embeds just the test split, and each split's
    embeddings equal those of one call for every split without the cache."""
    dd = data.load(str(table_file))
    calls = []
    real = embed.encode
    monkeypatch.setattr(embed, "encode", lambda texts, *a, **k: calls.append(len(texts)) or real(texts, *a, **k))
    some = embed.embed_dataset(dd, "hash", progress=False, splits=("train", "validation"))
    assert sorted(some) == ["train", "validation"] and calls == [len(dd["train"]), len(dd["validation"])]
    from jaxsel.io import read_npz
    assert sorted(read_npz(embed.cache_file(data.dataset_fingerprint(dd), "hash", 128))) == [
        "train", "train.seconds", "validation", "validation.seconds"]  # with the seconds each took
    every = embed.embed_dataset(dd, "hash", progress=False)
    assert calls[2:] == [len(dd["test"])]
    fresh = embed.embed_dataset(dd, "hash", progress=False, use_cache=False)
    for s in data.SPLITS:
        assert np.array_equal(every[s], fresh[s])
    assert np.array_equal(some["train"], fresh["train"])
    assert embed.embed_dataset(dd, "hash", progress=False, splits=("test",)).keys() == {"test"} and len(calls) == 6


def test_the_cache_keeps_what_embedding_took_and_a_fresh_run_folder_reports_it(tmp_cache, table_file, tmp_path,
                                                                               monkeypatch):
    """A run whose embeddings came from the global cache reported 0.0 s of embedding (a new user's
    round: a second run of a config into a new folder halved every search's cost over full data)."""
    import itertools
    from jaxsel import experiment
    from jaxsel.config import DataSpec, EmbedSpec, RunConfig
    dd = data.load(str(table_file))
    assert embed.embedding_seconds(dd, "hash") is None  # nothing cached
    clock = itertools.count(0, 10)  # each split "takes" 10 s on a fake clock
    monkeypatch.setattr(embed.time, "perf_counter", lambda: next(clock))
    embed.embed_dataset(dd, "hash", progress=False, splits=("train", "validation"))
    assert embed.embedding_seconds(dd, "hash") == 20.0 and embed.embedding_seconds(dd, "hash", splits=("test",)) is None
    embed.embed_dataset(dd, "hash", progress=False)  # adds the test split, keeps the others' seconds
    assert embed.embedding_seconds(dd, "hash", splits=data.SPLITS) == 30.0
    monkeypatch.setattr(embed, "encode", lambda *a, **k: pytest.fail("embedded again"))
    monkeypatch.setattr(experiment, "load_dataset", lambda spec: dd)
    cfg = RunConfig(data=DataSpec(name=str(table_file)), embed=EmbedSpec(model="hash"))
    for folder in ("a", "b"):  # two fresh run folders, both from the cache (10 s on the clock around the call)
        run = experiment.Run(cfg, tmp_path / folder, progress=False)
        run.embeddings(dd)
        assert run.timings["embed_seconds"] == 20.0


def test_an_unwritable_cache_warns_and_embeds(tmp_path, table_file, monkeypatch, capsys):
    """The embedding cache only saves time: where it cannot be written (here a file stands where
    its folder must go; root ignores permissions) the embeddings still come back, with a warning."""
    (tmp_path / "blocked").write_text("")
    monkeypatch.setenv("JAXSEL_CACHE", str(tmp_path / "blocked"))
    dd = data.load(str(table_file))
    out = embed.embed_dataset(dd, "hash", progress=False)
    assert out["train"].shape == (len(dd["train"]), 384)
    assert "warning: embeddings not cached" in capsys.readouterr().err


def test_local_model_folders_are_cached_by_their_files(tmp_path, tmp_cache):
    """Two local models in folders of the same name (a/model, b/model) shared one embedding cache
    file (named by the folder's base name): the second model's embeddings were the first one's.
    Now the files' digest is in the name (equal files, one file), and in the stage keys, which
    named the folder only: weights changed in place were not a new key."""
    from jaxsel.config import EmbedSpec
    from jaxsel.experiment import stages
    folders = [tmp_path / side / "model" for side in "abc"]
    for folder, weights in zip(folders, (b"first", b"second", b"first")):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(weights)
        (folder / "config.json").write_text("{}")
    files = [embed.cache_file("fp", str(f), 32) for f in folders]
    keys = [stages.key("embedding", "fp", EmbedSpec(model=str(f))) for f in folders]
    assert files[0] != files[1] and files[0] == files[2] and files[0].name.startswith("fp-model-")
    (folders[0] / "model.safetensors").write_bytes(b"changed!")  # new contents: a new file and key
    assert embed.cache_file("fp", str(folders[0]), 32) != files[0]
    assert stages.key("embedding", "fp", EmbedSpec(model=str(folders[0]))) != keys[0]
    assert stages.key("embedding", "fp", EmbedSpec()) == stages.key("embedding", "fp", EmbedSpec(model="minilm"))  # built-ins by name


def test_another_embedding_format_is_another_cache_file(tmp_cache, monkeypatch):
    """Round 21 of new users' tests asked what an upgraded jaxsel reuses: embeddings cached by a
    jaxsel that embeds otherwise are not read (the file's name carries the stage's format past 1;
    format 1's files keep the names they had)."""
    from jaxsel.experiment import stages
    first = embed.cache_file("fp", "minilm", 32)
    assert first.name == "fp-minilm-32.npz"
    monkeypatch.setitem(stages.FORMATS, "embedding", 2)
    assert embed.cache_file("fp", "minilm", 32).name == "fp-minilm-32-f2.npz"
    assert embed.cache_file("fp", "minilm", 32, "bfloat16").name == "fp-minilm-32-bfloat16-f2.npz"


def test_built_in_model_names_stay_names_beside_a_folder_of_that_name(tmp_path, tmp_cache, monkeypatch):
    """Cache files, stage keys and the encoder cache all ask ``config.model_files`` whether a model
    is a local folder: a built-in name is a name even where a folder called ``minilm`` sits in the
    working folder (its keys and cached embeddings stay those of the packaged weights). A folder's key
    changes with the files jaxsel reads of it, not with others beside them."""
    from jaxsel.config import EmbedSpec, model_files
    from jaxsel.experiment import stages
    key, file = stages.key("embedding", "fp", EmbedSpec(model="minilm")), embed.cache_file("fp", "minilm", 32)
    monkeypatch.chdir(tmp_path)
    for name in ("minilm", "mine"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    assert model_files("minilm") == "" and len(model_files("mine")) == 12
    assert stages.key("embedding", "fp", EmbedSpec(model="minilm")) == key and embed.cache_file("fp", "minilm", 32) == file
    assert embed.cache_file("fp", "mine", 32).name == f"fp-mine-{model_files('mine')}-32.npz"
    digest = model_files("mine")  # the files jaxsel reads key it (break-it round 46: a README edit refused --resume)
    (tmp_path / "mine" / "README.md").write_text("notes")
    (tmp_path / "mine" / "pytorch_model.bin").write_bytes(b"\0")
    assert model_files("mine") == digest
    (tmp_path / "mine" / "model.safetensors").write_bytes(b"\0")
    assert model_files("mine") != digest


def test_the_librarys_embedding_defaults_are_the_command_lines():
    """embed.encode and embed_dataset embedded at 256 tokens while jaxsel select/run and EmbedSpec use
    128 (other embeddings for longer texts, another cache file), against the README's "the library's
    defaults are the CLI's"."""
    import inspect
    from jaxsel import cli
    args = cli.build_parser().parse_args(["select", "tweets"])
    for fn in (embed.encode, embed.embed_dataset):
        params = inspect.signature(fn).parameters
        assert (params["max_length"].default, params["dtype"].default) == (args.max_length, args.dtype)
        assert params["model"].default == args.model


@pytest.mark.assets
def test_a_bert_folder_computing_otherwise_is_refused_not_run_as_bert(tmp_path):
    """Break-it round 46: a local BERT folder's hidden_act "relu", position_embedding_type
    "relative_key" or model_type "roberta" gave MiniLM's embeddings to the bit, and num_hidden_layers
    3 on a 6-layer checkpoint ran 3 layers: all without a word. Each is now one line. GELU's tanh
    approximation (gelu_new, ...), refused then, runs as itself."""
    import shutil
    from safetensors.numpy import load_file, save_file
    from jaxsel import assets
    from jaxsel.errors import JaxselError
    from jaxsel.models import bert
    source = assets.path("minilm", embed.MINILM_DIR)
    config = json.loads((source / "config.json").read_text())

    def folder(name, change=None, weights=None):
        out = tmp_path / name
        out.mkdir()
        (out / "config.json").write_text(json.dumps({**config, **(change or {})}))
        if weights is None:
            shutil.copy(source / "model.safetensors", out / "model.safetensors")
        else:
            save_file(weights, str(out / "model.safetensors"))
        return out
    assert len(bert.from_pretrained(folder("same")).layers) == 6
    for key, value in (("hidden_act", "relu"), ("position_embedding_type", "relative_key"), ("model_type", "roberta")):
        with pytest.raises(JaxselError, match=rf"config.json: {key} '{value}' \(jaxsel's BERT: '\w+'( or '\w+')*\): not "
                                              rf"supported$"):
            bert.from_pretrained(folder(f"{key}-{value}", {key: value}))
    for layers in (3, 8):
        with pytest.raises(JaxselError, match=rf"layers{layers}: the BERT checkpoint holds 6 layers, its config's "
                                              rf"num_hidden_layers {layers}$"):
            bert.from_pretrained(folder(f"layers{layers}", {"num_hidden_layers": layers}))
    weights = load_file(str(source / "model.safetensors"))
    extra = {**weights, "encoder.layer.0.attention.self.distance_embedding.weight": np.zeros((2, 2), np.float32)}
    with pytest.raises(JaxselError, match=r"extra: the BERT checkpoint has 1 tensor jaxsel's BERT does not use "
                                          r"\(encoder.layer.0.attention.self.distance_embedding.weight\): another"):
        bert.from_pretrained(folder("extra", weights=extra))
    heads = {**{f"bert.{k}": v for k, v in weights.items()}, "cls.predictions.bias": np.zeros(3, np.float32),
             "classifier.weight": np.zeros((2, 384), np.float32), "embeddings.token_type_ids": np.zeros((1, 512))}
    assert len(bert.from_pretrained(folder("heads", weights=heads)).layers) == 6  # heads and buffers: not read, not refused
    assert len(bert.from_pretrained(folder("gelu_python", {"hidden_act": "gelu_python"})).layers) == 6  # exact GELU too
    ids, mask = np.array([[101, 7592, 2088, 102]]), np.ones((1, 4), np.int32)
    exact = np.asarray(bert.from_pretrained(tmp_path / "same")(ids, mask))
    for act in bert.TANH_GELU:  # the tanh approximation runs as such: near exact GELU's output, not equal to it
        tanh = bert.from_pretrained(folder(act, {"hidden_act": act}))
        assert tanh.layers[0].tanh_gelu
        assert 0 < np.abs(np.asarray(tanh(ids, mask)) - exact).max() < 0.05
    with pytest.raises(JaxselError, match=r"model_type 'llama' \(jaxsel's BERT: 'bert'\): not supported \(a decoder's "
                                          r"folder\? embed reads BERT folders; finetune trains Llama and Qwen2 ones\)$"):
        bert.from_pretrained(folder("llama", {"model_type": "llama"}))
    with pytest.raises(JaxselError, match=r"has no tensor 'embeddings.word_embeddings.weight'"):  # another naming
        bert.from_pretrained(folder("renamed", weights={f"model.{k}": v for k, v in weights.items()}))
    (tmp_path / "heads" / "tokenizer.json").unlink(missing_ok=True)
    (tmp_path / "heads" / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(JaxselError, match=r"heads: no tokenizer.json in the folder \(its vocab.txt is not read"):
        embed.check_model(str(tmp_path / "heads"))
