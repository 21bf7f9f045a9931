"""The README's Python snippets run as written, on tiny settings: a 300-row CSV instead of tweets,
the weight-free hash embedder, 8 clusters, short PPO runs. Every substitution must find its text,
so a README edit that breaks a snippet (or escapes this test) fails here."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).parent.parent / "README.md"
TINY = {
    'jaxsel.data.load("tweets")': "jaxsel.data.load(DATA)",
    "embed_dataset(dd)": 'embed_dataset(dd, "hash")',
    'kmeans(emb["train"], 256)': 'kmeans(emb["train"], 8)',
    'SelectConfig(method="ppo", budget=0.05)':
        'SelectConfig(method="ppo", budget=0.05, ppo=jaxsel.agents.ppo.PPOConfig(num_envs=4, num_steps=8, '
        'total_timesteps=64))',
    "ppo.PPOConfig()": "ppo.PPOConfig(num_envs=4, num_steps=8, total_timesteps=64)",
    "jax.random.split(jax.random.PRNGKey(0), 8)": "jax.random.split(jax.random.PRNGKey(0), 2)",
}


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    code = "\n".join(re.findall(r"```python\n(.*?)```", README.read_text(), re.S))
    for old, new in TINY.items():
        assert old in code, f"README snippet changed: {old!r} not found (update tests/test_readme.py)"
        code = code.replace(old, new)
    rng = np.random.default_rng(0)
    words = {"pos": "good great fine lovely", "neg": "bad awful poor dull"}
    rows = [f"{' '.join(rng.choice(words[y].split(), 5))} {i},{y}" for i, y in enumerate(["pos", "neg"] * 150)]
    (tmp_path / "tiny.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    scope = {"DATA": str(tmp_path / "tiny.csv")}
    exec(compile(code, str(README), "exec"), scope)
    assert (tmp_path / "sel.json").exists() and len(scope["subset"]) == len(scope["sel"].indices) == 12
    best = np.asarray(scope["runners"].best.score)  # a value, not a shape: waits for the computation
    assert best.shape == (2,) and np.all((best >= 0) & (best <= 1))


def test_every_module_is_an_attribute_of_the_package():
    """`import jaxsel; jaxsel.allocator.keep_freed_memory()` as the README writes it: allocator, cli,
    distributed, metrics and progress were AttributeErrors after `import jaxsel` (a new user's round)."""
    import pkgutil
    import jaxsel
    names = {m.name for m in pkgutil.iter_modules(jaxsel.__path__) if not m.name.startswith("_")}
    assert names == set(jaxsel.__all__)
    assert jaxsel.allocator.keep_freed_memory.__module__ == "jaxsel.allocator"
