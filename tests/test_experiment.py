"""``jaxsel run`` end to end on a tiny config: hash embeddings, a tiny BERT target."""

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import write_data
from jaxsel import allocator, cli, cluster, config, experiment
from jaxsel.errors import JaxselWarning

pytestmark = pytest.mark.assets  # the tiny BERT uses MiniLM's tokenizer
ROOT = Path(__file__).resolve().parent.parent

TINY = """
name = "tiny"
methods = [{methods}]
budgets = ["0.1"]
variants = [{variants}]
seeds = [0, 1]

[data]
split_col = "split"

[embed]
model = "hash"

[cluster]
k = 12
{cluster_extra}

[proxy]
kind = "ridge"
project = 16

[select]
rl_steps = 512
climb_rounds = 2
ppo = {{num_envs = 8, num_steps = 8}}
{select_extra}

[noise]
flip_fraction = 0.25
duplicate_fraction = 0.25
copies = 2

[finetune]
model = "tiny-bert"
epochs = 1
min_steps = 0
batch_size = 8
max_length = 16
lr = 1e-3
"""


def write_config(path, methods=("greedy", "random", "full"), variants=("clean", "noisy"), select_extra="",
                 cluster_extra=""):
    path.write_text(TINY.format(methods=", ".join(f'"{m}"' for m in methods),
                                variants=", ".join(f'"{v}"' for v in variants), select_extra=select_extra,
                                cluster_extra=cluster_extra))
    return path


def test_run_reports_every_cell_and_reuses_stages(tmp_path, tmp_cache, monkeypatch, capsys):
    data = write_data(tmp_path / "d.csv")
    methods = ("ppo", "greedy", "random", "stratified", "full")  # climb: tests/test_agents.py
    cfg = write_config(tmp_path / "tiny.toml", methods=methods)
    out = tmp_path / "run"
    assert cli.main(["run", "--config", str(cfg), "--data", str(data), "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["complete"] and len(doc["rows"]) == 2 * 2 * len(methods)
    for name in ("report.md", "accuracy_vs_budget.png", "wallclock.png", "mask_map.png"):
        assert (out / name).stat().st_size > 0
    rows = {(r["variant"], r["method"], r["seed"]): r for r in doc["rows"]}
    n_train = 252
    for seed in (0, 1):
        assert rows[("clean", "full", seed)]["examples"] == n_train
        assert rows[("clean", "greedy", seed)]["examples"] == round(0.1 * n_train)
        assert rows[("clean", "random", seed)]["corrupted_chosen"] == 0
        assert rows[("noisy", "stratified", seed)]["examples"] == round(0.1 * rows[("noisy", "full", seed)]["examples"])
        assert sorted(rows[("clean", "stratified", seed)]["label_counts"]) == [8, 8, 9]  # 84/84/84 rows, 25 picks
        noisy_full = rows[("noisy", "full", seed)]
        # 3 of 12 clusters flipped, 3 duplicated twice: every flipped row and every copy is corrupted
        assert noisy_full["corrupted_chosen"] > 0 and noisy_full["examples"] > n_train
        assert noisy_full["duplicates_chosen"] == noisy_full["examples"] - n_train
        assert noisy_full["flipped_chosen"] > 0
        assert noisy_full["corrupted_chosen"] == noisy_full["flipped_chosen"] + noisy_full["duplicates_chosen"]
    # greedy is deterministic given the run's one clustering: both seeds finetune one subset, and the table says so
    assert "| clean | greedy | 10% | 2 (1 subset) |" in (out / "report.md").read_text()
    assert "| clean | stratified | 10% | 2 |" in (out / "report.md").read_text()
    assert "vs stratified, paired" in (out / "report.md").read_text()
    labels = doc["dataset"]["labels"]  # round 39: the label mix column's order was nowhere in the report
    assert f"in class order {'/'.join(labels)}" in (out / "report.md").read_text() and len(labels) == 3
    err = capsys.readouterr().err  # round 40: a subset missing a class is warned of as it is made, as select's is
    for r in doc["rows"]:
        gone = [i for i, (c, t) in enumerate(zip(r["label_counts"], r["train_label_counts"])) if t and not c]
        said = f"warning: {r['variant']} {r['method']} 10% seed {r['seed']}: the subset holds no example of class"
        assert (said in err) == bool(gone), (said, gone)
    assert "the training subset (" not in err  # the finetune's own warning (round 42): said once, by the cell's name
    # every subset's selection file, the baselines' too (a validated pick of stratified could not be exported)
    from jaxsel.selection import Selection
    for r in doc["rows"]:
        if r["method"] != "full":
            sel = Selection.load(r["selection"])
            assert sel.meta["method"] == r["method"] and len(sel.indices) == r["examples"]
            assert sel.scores["proxy_accuracy"] == r["proxy_accuracy"]
    chosen = rows[("clean", "stratified", 1)]
    assert cli.main(["export", chosen["selection"], "--out", str(tmp_path / "s.jsonl"), "--no-source-columns"]) == 0
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == chosen["examples"]
    # a cell by hand (science audit, round 47: no select reproduced a run's cell of seed > 0): select's --seed
    # seeds the clustering and the proxy too, a run's cells the config's [cluster] and [proxy] seeds (0 here)
    cell = Selection.load(rows[("clean", "greedy", 1)]["selection"]).indices.tolist()
    hand = ["select", str(data), "--split-col", "split", "--model", "hash", "--k", "12", "--project", "16", "--method",
            "greedy", "--budget", "0.1", "--seed", "1"]
    assert cli.main(hand + ["--cluster-seed", "0", "--proxy-seed", "0", "--out", str(tmp_path / "hand" / "a")]) == 0
    assert Selection.load(tmp_path / "hand" / "a" / "selection.json").indices.tolist() == cell
    assert cli.main(hand + ["--out", str(tmp_path / "hand" / "b")]) == 0
    assert Selection.load(tmp_path / "hand" / "b" / "selection.json").indices.tolist() != cell
    # recorded (and in the checkpoints' signature) where they differ from --seed
    made = {f: Selection.load(tmp_path / "hand" / f / "selection.json").meta for f in ("a", "b")}
    assert made["a"]["cluster_seed"] == made["a"]["proxy_seed"] == 0 and "cluster_seed" not in made["b"]
    assert list(doc["agents"]) == ["ppo"]  # the settings PPO ran with, recorded (DQN is not in methods)
    assert doc["config_file"] == str(cfg.resolve()) and doc["environment"]["versions"]["jaxsel"]  # provenance
    from jaxsel.agents.ppo import PPOConfig
    assert doc["agents"]["ppo"]["network"] == PPOConfig().network
    assert f"PPO 512 environment steps, {doc['agents']['ppo']['network']} network" in (out / "report.md").read_text()
    # a second run reuses every stage: the same rows, no finetuning
    before = {p.name for p in (out / "stages").iterdir()}
    # ... and removes the temporary files a killed run left (a new user's test: .wallclock.png.<random>.png)
    stale = [out / ".wallclock.png.k9_x2abc.png", out / "stages" / ".embed-1.json.abcdefgh.json"]
    kept = [out / ".hidden", out / "notes.txt", out / "stages" / "x" / "checkpoints" / ".s.json.abcdefgh.json"]
    for f in stale + kept:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("")
    assert {r["finetune_malloc"] for r in doc["rows"]} == {allocator.describe()}
    with monkeypatch.context() as m:  # each reused row keeps the malloc setting its finetune ran under
        m.setattr(allocator, "applied", not allocator.applied)
        doc2 = experiment.run(cfg, out, progress=False, name=str(data))
    assert doc2["environment"]["malloc"] != doc["environment"]["malloc"]
    assert not any(f.exists() for f in stale) and all(f.exists() for f in kept)
    (out / "notes.txt").unlink(), (out / ".hidden").unlink()
    shutil.rmtree(out / "stages" / "x")
    assert {p.name for p in (out / "stages").iterdir()} == before
    assert doc2["rows"] == doc["rows"]
    assert doc2["finetunes_reused"] == len(doc2["rows"])  # what jaxsel run says it reused
    assert doc2["selections_made"] == [] and doc2["selections_reused"] == sum(r["method"] != "full" for r in doc["rows"])
    # results.json (which says "complete") is written after the report and plots
    (out / "results.json").unlink()

    def fail(*args):
        raise RuntimeError("killed while drawing")

    with monkeypatch.context() as m, pytest.raises(RuntimeError):
        m.setattr(experiment.report, "write", fail)
        experiment.run(cfg, out, progress=False, name=str(data))
    assert not (out / "results.json").exists()
    # a run stopped before some stages finished redoes exactly those, with the same results, and says which
    dropped = [*(out / "stages").glob("noisy-greedy-*-s1-*/selection.json"),
               *(out / "stages").glob("clean-random-*-s0-finetune-*/metrics.json")]
    for stage in dropped:
        stage.unlink()
    capsys.readouterr()
    assert cli.main(["run", "--config", str(cfg), "--out", str(out), "--data", str(data)]) == 0
    said = capsys.readouterr().out
    doc3 = json.loads((out / "results.json").read_text())
    again = sorted(f"noisy greedy {p.parent.name.split('-')[2]} seed 1" for p in dropped if "greedy" in p.parent.name)
    cells = sum(r["method"] != "full" for r in doc["rows"])  # full's cells select nothing
    assert f"selections: {len(again)} made ({', '.join(again)}), {cells - len(again)} reused" in said, said
    keep = ("variant", "method", "seed", "examples", "proxy_accuracy", "test_accuracy", "corrupted_chosen")
    assert [{k: r[k] for k in keep} for r in doc3["rows"]] == [{k: r[k] for k in keep} for r in doc["rows"]]
    assert f"{len(doc3['rows'])} finetunes ({len(doc3['rows']) - 1} reused from the stage folder)" in said  # only


def test_stages_another_jaxsel_left_are_recomputed_not_reused(tmp_path, tmp_cache, monkeypatch, capsys):
    """A run folder another jaxsel left (round 21 of new users' tests): a finetune stage keyed by the
    same inputs was reused although the newer code scored it otherwise (``warmup = 0`` had changed
    meaning), and a stage's checkpoints the older code left stopped every rerun with advice to drop a
    --resume that ``jaxsel run`` does not have. Stage keys carry a format number per stage
    (``stages.FORMATS``), and a stage's checkpoints that cannot be resumed are set aside with a warning."""
    import jax.numpy as jnp
    import jaxsel
    from jaxsel.checkpoint import Checkpoints
    from jaxsel.experiment import stages
    data = write_data(tmp_path / "d.csv")
    cfg = write_config(tmp_path / "tiny.toml", methods=("ppo", "random"), variants=("clean",))
    out = tmp_path / "run"
    doc = experiment.run(cfg, out, progress=False, name=str(data))
    keep = ("variant", "method", "seed", "examples", "proxy_accuracy", "test_accuracy", "selection")
    rows = [{k: r.get(k) for k in keep} for r in doc["rows"]]
    monkeypatch.setitem(stages.FORMATS, "finetune", stages.FORMATS["finetune"] + 1)  # code that finetunes otherwise
    doc2 = experiment.run(cfg, out, progress=False, name=str(data))
    assert doc2["finetunes_reused"] == 0 and [{k: r.get(k) for k in keep} for r in doc2["rows"]] == rows
    [chosen] = (out / "stages").glob("clean-ppo-*-s0-*/selection.json")
    stage = chosen.parent
    chosen.unlink()
    with monkeypatch.context() as m:  # a checkpoint of another jaxsel, which signed its runs otherwise
        m.setattr(jaxsel, "code_version", lambda: "0.0.1+gabcdef0")
        Checkpoints(stage / "checkpoints" / "agent", '{"config": {"method": "ppo"}}', resume=False).save(1, {"x": jnp.zeros(2)})
    capsys.readouterr()
    doc3 = experiment.run(cfg, out, progress=False, name=str(data))
    err = capsys.readouterr().err
    assert "was written by jaxsel 0.0.1+gabcdef0 (this is " in err and "this stage starts afresh" in err
    assert "--resume" not in err and [{k: r.get(k) for k in keep} for r in doc3["rows"]] == rows
    assert doc3["finetunes_reused"] == len(rows)


def test_a_stage_key_follows_the_formats_of_the_stages_it_is_computed_from(monkeypatch):
    """A new clustering (or embedding) recomputes the selections made on the old one: their keys carry
    the formats of the stages they are computed from (selections were keyed by the clustering's
    settings alone, so a clustering computed otherwise would have been paired with old selections)."""
    from jaxsel.experiment import stages
    keys = lambda: {s: stages.key(s, "fp", {"k": 4}) for s in stages.FORMATS}  # noqa: E731
    before = keys()
    monkeypatch.setitem(stages.FORMATS, "clustering", stages.FORMATS["clustering"] + 1)
    after = keys()
    assert sorted(s for s in before if before[s] != after[s]) == ["clustering", "selection"]
    monkeypatch.setitem(stages.FORMATS, "embedding", stages.FORMATS["embedding"] + 1)
    assert sorted(s for s, k in keys().items() if k != after[s]) == ["clustering", "embedding", "selection"]


def test_a_selection_key_follows_the_revision_of_its_algorithm(monkeypatch):
    """A run reused the CLIMB stage an older jaxsel computed under the same key, though CLIMB now selects
    other rows (break-it round 37): a revised algorithm (agents.revision) keys another stage; the others
    keep the keys they had (their parts as before)."""
    from jaxsel import agents
    from jaxsel.config import RunConfig
    from jaxsel.experiment import stages
    run = RunConfig()
    cells = {m: agents.cell_config(run.select, m, 0.05, 0).used() for m in ("greedy", "climb", "ppo")}
    now = {m: stages.selection_key("fp", run, c, True) for m, c in cells.items()}
    before = {m: stages.key("selection", "fp", run.embed, run.cluster, run.proxy, c, run.select.filter)
              for m, c in cells.items()}  # the parts of the keys of before
    assert now["greedy"] == before["greedy"] and now["ppo"] == before["ppo"] and now["climb"] != before["climb"]
    monkeypatch.setattr(agents, "revision", lambda c: 1)
    assert stages.selection_key("fp", run, cells["climb"], True) == before["climb"]


def test_selection_never_sees_the_test_split(tmp_path, tmp_cache):
    """Scrambled test labels change no selection (cluster searches with quota picks in the typical
    order among the rows cleanlab does not flag, and the example-level baselines)."""
    cfg = write_config(tmp_path / "tiny.toml", methods=("greedy", "climb", "stratified", "typical", "cleanlab"),
                       variants=("noisy",),
                       select_extra='granularity = "quota"\nhorizon = 8\nfilter = "cleanlab"', cluster_extra='order = "typical"')
    picks = []
    for seed in (None, 7):
        data = write_data(tmp_path / f"d{seed}.csv", test_labels_seed=seed)
        out = tmp_path / f"run{seed}"
        doc = experiment.run(cfg, out, progress=False, name=str(data))
        picks.append({(r["method"], r["seed"]): (r["proxy_accuracy"], r["examples"], r["label_counts"])
                      for r in doc["rows"]})
        sels = sorted((out / "stages").glob("*/selection.json"))
        picks[-1]["files"] = [json.loads(p.read_text())["cluster_ids"] for p in sels]
        # each records the [data] table it was made from: `jaxsel export` rebuilds the dataset from it
        assert {json.loads(p.read_text())["meta"]["data_spec"]["name"] for p in sels} == {str(data.resolve())}
        searches = [json.loads(p.read_text())["cluster_ids"] for p in sels if "-greedy-" in p.parent.name
                    or "-climb-" in p.parent.name]
        assert len(searches) == 4 and all(len(set(ids)) < len(ids) for ids in searches)  # quota picks revisit clusters
        rows = {(r["method"], r["seed"]): r for r in doc["rows"]}
        assert all(rows[(m, s)]["examples"] == rows[("greedy", s)]["examples"]
                   for m in ("stratified", "typical", "cleanlab") for s in (0, 1))
        # the cleanlab baseline and the searches among the unflagged rows pay for the flags (computed once)
        assert doc["timings"]["cleanlab_seconds_noisy"] == doc["timings"]["filter_seconds_noisy"] > 0
    assert picks[0] == picks[1]


@pytest.mark.parametrize("text,needle", [("bogus = 1", "unknown key 'bogus'"),
                                         ('methods = ["magic"]', "unknown method 'magic'"),
                                         ("[finetune]\nepochz = 2", "unknown key 'epochz'"),
                                         ("budgets = [\"2\"]", "budget must be strictly between 0 and 1"),
                                         ('[select]\ngranularity = "rows"', "[select]: unknown granularity 'rows'"),
                                         ('[cluster]\norder = "best"', "[cluster]: unknown order 'best'"),
                                         ("name = [", "not valid TOML"),
                                         ('[cluster]\nk = "ten"', "[cluster]: k must be an integer, got 'ten'"),
                                         ("[cluster]\nk = 2.5", "k must be an integer, got 2.5"),
                                         ("[cluster]\nk = -4", "[cluster]: k must be at least 1, got -4"),
                                         ("[select.ppo]\npreference_rate = 1e6",
                                          "[select.ppo]: preference_rate must be in [0, 1000], got 1000000.0"),
                                         ("[cluster]\nstratified = 1", "stratified must be true or false"),
                                         ('seeds = [0, "1"]', "seeds must be a list (an integer each)"),
                                         ("[proxy]\nproject = \"64\"", "project must be an integer, got '64'"),
                                         ('[finetune]\nlr = "fast"', "lr must be a number"),
                                         ("[select.ppo]\nnum_envs = 0.5", "[select.ppo]: num_envs must be an integer"),
                                         ("[select.dqn]\nbatch = 4", "[select.dqn]: unknown key 'batch'"),
                                         ('[noise]\nkind = "uniform"', "[noise]: unknown kind 'uniform'"),
                                         # checked as the config loads (was: after the embed and cluster stages)
                                         ("[noise]\nflip_fraction = 0.6\nduplicate_fraction = 0.5",
                                          "[noise]: flip_fraction + duplicate_fraction (0.6 + 0.5) must be below 1"),
                                         ('[select]\nfilter = "magic"', "[select]: unknown filter 'magic'"),
                                         ('[proxy]\nscore_on = "test"', "[proxy]: unknown score_on 'test'"),
                                         ('[select]\nbalance = "even"', "[select]: unknown balance 'even'"),
                                         ('[select]\nbalance = "equal"', "needs label-pure clusters")])
def test_bad_configs_are_one_line_errors(tmp_path, capsys, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text + "\n")
    assert cli.main(["run", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_configs_are_read_as_utf8_whatever_the_locale(tmp_path, capsys):
    """A config is UTF-8 text (TOML's rule): a byte-order mark (Windows Notepad) is accepted, bytes
    that are not UTF-8 are one line naming the byte, and a UTF-8 config with non-ASCII names loads
    under a Latin-1 locale (it was read in the locale's encoding: a UnicodeDecodeError traceback)."""
    import subprocess
    import sys
    from jaxsel.config import load_config
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbfname = \"bom\"\n")
    assert load_config(bom).name == "bom"
    capsys.readouterr()  # its note: no dataset named
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'name = "x\xff"\n')
    assert cli.main(["run", "--config", str(latin), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not UTF-8 text (byte 0xff at offset 9)" in err and len(err.splitlines()) == 1
    greek = tmp_path / "greek.toml"
    greek.write_text('name = "ελληνικά"  # é\n[data]\ntext_col = "κείμενο"\n', encoding="utf-8")
    code = f"from jaxsel.config import load_config; print(ascii(load_config({str(greek)!r}).data.text_col))"  # ASCII argv
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C.ISO-8859-1", "PYTHONIOENCODING": "utf-8"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, encoding="utf-8")
    assert out.returncode == 0 and out.stdout.strip() == ascii("κείμενο"), out.stderr[-500:]


def test_the_package_names_the_encoding_of_every_text_file_it_opens():
    """The kind of the test above: every ``read_text``, ``write_text`` and text-mode ``open`` in jaxsel
    names its encoding (the locale's default turned non-ASCII configs and reports into tracebacks)."""
    import ast
    from pathlib import Path
    missing = []
    for path in sorted((Path(__file__).parent.parent / "jaxsel").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            mode = node.args[1] if name == "open" and len(node.args) > 1 else None
            binary = isinstance(mode, ast.Constant) and "b" in str(mode.value)
            if name in ("read_text", "write_text") or (name == "open" and isinstance(node.func, ast.Name) and not binary):
                missing.append(f"{path.name}:{node.lineno}")
    assert not missing, f"text files opened without an encoding: {missing}"


def test_run_configs_built_in_python_are_checked_as_files_are(tmp_path, capsys):
    """The checks of a config file hold for a RunConfig made in Python (they lived in load_config
    only: RunConfig(methods=("magic",)) ran until the method was looked up); agent settings that no
    listed method uses get a note (they were silently ignored)."""
    from jaxsel.config import DataSpec, RunConfig, SelectSpec
    for bad, says in ((dict(methods=("magic",)), "unknown method 'magic'"), (dict(budgets=(1.5,)), "strictly between"),
                      (dict(seeds=(1, 1)), "seeds lists 1 twice"), (dict(variants=("dirty",)), "unknown variant"),
                      (dict(name="a/b"), "plain folder name"), (dict(name="  "), "name must not be blank"),
                      (dict(seeds=()), "must not be empty"),
                      (dict(select=SelectSpec(balance="equal")), "needs label-pure clusters"),
                      (dict(variants=()), "must not be empty"), (dict(name="a\0b"), "name must not contain a NUL"),
                      (dict(seeds=(2**70,)), "seeds must be an integer of at most 2,147,483,647"),
                      (dict(seeds=(-3,)), "seeds must be from 0 to 2147483647, got -3"), (dict(name="x" * 300), "255 bytes"),
                      (dict(stages="/tmp/s\0x"), "run config stages must not contain a NUL character"),
                      (dict(stages=" "), r"stages must name a folder \(leave it out for the run folder's stages/\)"),
                      (dict(select={"rl_step": 5}), r"\[select\]: unknown key 'rl_step'"),
                      (dict(budgets=("1/0",)), "budget must be a number like 0.05 or 1/16"),
                      (dict(proxy=SelectSpec()), "run config proxy must be a ProxyConfig")):
        with pytest.raises(cli.JaxselError, match=says):
            RunConfig(**bad)
    for bad, says in ((dict(filter="magic"), "unknown select filter"), (dict(rl_steps=0), "rl_steps must be at least 1"),
                      (dict(quota=5), "granularity"), (dict(ppo={"lr": "x"}), r"\[select.ppo\]: lr must be a number"),
                      (dict(dqn={"batch": 4}), r"\[select.dqn\]: unknown key 'batch'")):
        with pytest.raises(cli.JaxselError, match=says):
            SelectSpec(**bad)
    assert RunConfig(data=DataSpec(name=tmp_path / "d.csv")).data.name == str(tmp_path / "d.csv")  # a Path is a name
    spelled = RunConfig(budgets=("1/16", 0.05), select={"rl_steps": 5})  # as a file spells them (were refused)
    assert spelled.budgets == (0.0625, 0.05) and spelled.select == SelectSpec(rl_steps=5)
    numpy_made = RunConfig(budgets=np.array([0.05, 0.1]), seeds=np.arange(3))  # were refused as "not a list"
    assert numpy_made.budgets == (0.05, 0.1) and numpy_made.seeds == (0, 1, 2) and type(numpy_made.seeds[0]) is int
    with pytest.raises(cli.JaxselError, match=r"^run config seeds must be a list \(an integer each\), got array\(\[\[0, 0\], \[0, 0\]\]\)$"):
        RunConfig(seeds=np.zeros((2, 2), int))  # on one line
    cfg = tmp_path / "c.toml"
    cfg.write_text("data = 5\n")  # a table's name as a key: a TypeError when the --data overrides were merged
    with pytest.raises(cli.JaxselError, match=r"\[data\] must be a table, got data = 5"):
        experiment.load_config(cfg)
    odd = tmp_path / "br [x]" / "c.name.toml"  # messages keep the whole path and the field
    odd.parent.mkdir()
    for body, says in (('name = "a/b"', ": name must be a plain folder name"),
                       ('[select]\nbalance = "equal"', ": [select] balance = 'equal' needs label-pure clusters"),
                       ("[select.ppo]\nlr = -1.0", " [select.ppo]: lr must be a number > 0")):
        odd.write_text(body + "\n")
        with pytest.raises(cli.JaxselError) as e:
            experiment.load_config(odd)
        assert str(e.value).startswith(f"{odd}{says}"), str(e.value)
    odd.write_text("[select.ppo]\nlr = 1\n")
    assert experiment.load_config(odd).select.ppo == {"lr": 1.0}  # one stage key for lr = 1 and lr = 1.0
    cfg.write_text('methods = ["random"]\n[data]\nname = "tweets"\n[select.ppo]\nnetwork = "late"\n')
    capsys.readouterr()
    experiment.load_config(cfg)
    assert capsys.readouterr().err.splitlines() == [f"warning: {cfg} sets [select.ppo] but methods do not list 'ppo': unused"]
    # settings nothing reads get a note each (a new user's round: they ran silently); used ones none
    cfg.write_text('methods = ["greedy", "stratified"]\nvariants = ["clean"]\n[data]\nname = "tweets"\n'
                   '[select]\nrl_steps = 500\nclimb_rounds = 9\nfilter = "cleanlab"\n[noise]\nflip_fraction = 0.3\n'
                   '[finetune]\nhead = "verbalizer"\n')  # linear is refused for BERT
    experiment.load_config(cfg)
    notes = capsys.readouterr().err.splitlines()
    assert [n.split(" sets ", 1)[1] for n in notes] == [
        "[select] rl_steps but methods list no RL agent (ppo, dqn): unused",
        "[select] climb_rounds but methods do not list 'climb': unused",
        "[noise] but variants do not list 'noisy': unused",
        "[finetune] head, which decoders use, but the target is minilm: unused"]
    cfg.write_text('methods = ["greedy"]\n[data]\nname = "tweets"\n[select]\nsimilarity = true\nagreement = true\n')
    experiment.load_config(cfg)  # the RL agents' observations: no search reads them (agents.READS)
    assert [n.split(" sets ", 1)[1] for n in capsys.readouterr().err.splitlines()] == [
        "[select] agreement but methods list no RL agent (ppo, dqn): unused",
        "[select] similarity but methods list no RL agent (ppo, dqn): unused"]
    searches = "ppo, dqn, climb, greedy, random-search"
    for methods, select, said in (
            ('"greedy"', 'horizon = 8', ["horizon but granularity 'cluster' picks whole clusters"]),
            ('"greedy"', 'granularity = "quota"\nquota = 4\nhorizon = 8', ["horizon but quota sets the rows per pick"]),
            ('"stratified", "full"', 'granularity = "quota"\nbalance = "equal"',  # no refusal: nothing reads balance
             [f"granularity but methods list none of {searches}", f"balance but methods list none of {searches}"])):
        cfg.write_text(f'methods = [{methods}]\n[data]\nname = "tweets"\n[select]\n{select}\n')
        experiment.load_config(cfg)
        assert [n.split(" sets [select] ", 1)[1] for n in capsys.readouterr().err.splitlines()] == \
            [f"{n}: unused" for n in said]
    cfg.write_text('methods = ["stratified"]\n[data]\nname = "tweets"\n[select]\nfilter = "cleanlab"\n')
    experiment.load_config(cfg)
    assert "[select] filter = 'cleanlab' but methods list no search" in capsys.readouterr().err
    cfg.write_text('methods = ["climb", "ppo"]\nvariants = ["noisy"]\n[data]\nname = "tweets"\n'
                   '[select]\nrl_steps = 500\nclimb_rounds = 9\nfilter = "cleanlab"\n[noise]\nflip_fraction = 0.3\n')
    experiment.load_config(cfg)
    assert capsys.readouterr().err == ""
    # each listed agent's own steps win over rl_steps (a new user's round: it ran silently); one agent's do not
    for agents, note in ((["ppo"], True), (["ppo", "dqn"], False)):
        cfg.write_text(f'methods = {json.dumps(agents)}\n[data]\nname = "tweets"\n[select]\nrl_steps = 500\n'
                       '[select.ppo]\ntotal_timesteps = 64\n')
        experiment.load_config(cfg)
        err = capsys.readouterr().err
        assert ("[select] rl_steps but [select.ppo] total_timesteps sets the agents' steps: unused" in err) == note, err
    cfg.write_text('[data]\nname = "tweets"\n[finetune]\nmin_steps = 50\nmax_steps = 5\n')
    from jaxsel.finetune import planned_steps  # max_steps caps min_steps (the default 100 meets max_steps = 5 too)
    assert planned_steps(experiment.load_config(cfg).finetune, 100) == (5, 13)  # 4 steps an epoch, 13 epochs planned


def test_a_bad_data_file_leaves_no_run_folder(tmp_path, capsys):
    """A run whose data cannot be read stops with one line and creates nothing (a new user's test
    found an empty OUT/stages/ left behind)."""
    data = tmp_path / "d.csv"
    data.write_text("review,stars\n" + "".join(f"t{i},{i % 2}\n" for i in range(40)))
    cfg = write_config(tmp_path / "c.toml", methods=("random",))
    assert cli.main(["run", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "missing column 'text'" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_missing_config_is_one_line_error(tmp_path, capsys):
    assert cli.main(["run", "--config", str(tmp_path / "nope")]) == 2
    assert "no such config" in capsys.readouterr().err
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.toml").write_text("")
    assert cli.main(["run", "--config", str(tmp_path / "configs")]) == 2
    assert "is a folder; give a TOML file in it (mine.toml)" in capsys.readouterr().err
    assert cli.main(["run", "--config", "/dev/null"]) == 2  # it said "no such config"
    assert "config /dev/null is not a regular file" in capsys.readouterr().err
    with pytest.MonkeyPatch.context() as m:  # outside a checkout: where it looked, and the shipped configs
        m.chdir(tmp_path / "configs")
        assert cli.main(["run", "--config", "configs/nope"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"no such config: configs/nope (a relative path is read from the working folder: "
                            f"{tmp_path / 'configs'}); nor is it one of the configs shipped with jaxsel "
                            f"({config.SHIPPED_CONFIGS})") and len(err.splitlines()) == 1
        gone = tmp_path / "gone"
        gone.mkdir()
        m.chdir(gone)
        gone.rmdir()  # a deleted working folder: Path.cwd() raises
        assert cli.main(["run", "--config", "configs/nope"]) == 2
        assert capsys.readouterr().err.strip().startswith("jaxsel: error: no such config: configs/nope "
                                                          "(the working folder no longer exists); nor is it one")


def test_shipped_configs_are_found_outside_a_checkout(tmp_path, capsys, monkeypatch):
    """An installed jaxsel finds `configs/quick` (the default of `jaxsel run`) and `quick` in the
    package (it said "no such config" outside a clone); a file of that name in the working folder wins."""
    monkeypatch.chdir(tmp_path)
    want = experiment.load_config(ROOT / "configs" / "quick.toml")
    capsys.readouterr()
    for name in ("configs/quick", "quick", "configs/quick.toml"):
        assert experiment.load_config(name) == want
        assert "using the config shipped with jaxsel" in capsys.readouterr().err
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quick.toml").write_text('name = "mine"\n')
    assert experiment.load_config("configs/quick").name == "mine" and "shipped" not in capsys.readouterr().err
    assert experiment.load_config("quick").name == "mine" and "shipped" not in capsys.readouterr().err
    (tmp_path / "configs" / "quick.toml").unlink()
    (tmp_path / "quick").mkdir()  # a folder named like a config does not hide the shipped file
    assert experiment.load_config("quick") == want
    assert (config.SHIPPED_CONFIGS / "quick.toml").read_bytes() == (ROOT / "configs" / "quick.toml").read_bytes()


def test_config_numbers_are_coerced_to_their_fields(tmp_path):
    cfg = tmp_path / "ok.toml"
    cfg.write_text('seeds = [3]\nbudgets = [0.05, "1/16"]\n[finetune]\nlr = 1\n[proxy]\nproject = 32\n')
    c = experiment.load_config(cfg)
    assert c.seeds == (3,) and c.budgets == (0.05, 0.0625) and c.finetune.lr == 1.0 and type(c.finetune.lr) is float
    assert c.proxy.project == 32 and c.cluster == experiment.RunConfig().cluster
    assert experiment.Run(c, tmp_path / "run", progress=False).stage_dir == tmp_path / "run" / "stages"
    cfg.write_text(f'stages = "{tmp_path / "shared"}"\n')
    shared = experiment.Run(experiment.load_config(cfg), tmp_path / "other", progress=False)
    assert shared.stage_dir == tmp_path / "shared" and not shared.stage_dir.exists()  # made once the data loads


def test_cli_defaults_are_the_config_defaults():
    from jaxsel.config import ClusterSpec, EmbedSpec, FinetuneConfig, RunConfig, SelectSpec
    parser = cli.build_parser()
    select = parser.parse_args(["select"])
    assert (select.k, select.order, select.steps, select.granularity, select.horizon) == \
        (ClusterSpec.k, ClusterSpec.order, SelectSpec.rl_steps, SelectSpec.granularity, SelectSpec.horizon)
    assert (select.max_length, select.model) == (EmbedSpec.max_length, EmbedSpec.model)
    assert (select.project, select.proxy, select.objective) == (RunConfig().proxy.project, "ridge", "accuracy")
    assert parser.parse_args(["cluster"]).k == ClusterSpec.k == parser.parse_args(["data"]).k
    ft = parser.parse_args(["finetune"])
    want = FinetuneConfig()
    assert (ft.model, ft.epochs, ft.batch_size, ft.grad_accum, ft.lr, ft.max_length, ft.head, ft.lora_rank) == \
        (want.model, want.epochs, want.batch_size, want.grad_accum, want.lr, want.max_length, want.head, want.lora_rank)


def test_noisy_variant_of_every_kind_has_its_known_truth(tmp_path, tmp_cache, monkeypatch):
    """Run.variant builds each noise kind: flipped labels where flagged, near-duplicate copies with
    their own texts and embeddings."""
    from jaxsel.config import ClusterSpec, DataSpec, EmbedSpec, NoiseSpec, RunConfig
    rng = np.random.default_rng(0)
    words = {"pos": "good great fine lovely nice", "neg": "bad awful poor dull grim"}
    rows = [f"{' '.join(rng.choice(words[y].split(), 6))} {i},{y}" for i, y in enumerate(["pos", "neg"] * 100)]
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    for spec in (NoiseSpec(kind="source"), NoiseSpec(kind="instance", flip_fraction=0.1, near_duplicates=True)):
        cfg = RunConfig(data=DataSpec(name=str(tmp_path / "d.csv")), embed=EmbedSpec(model="hash"),
                        cluster=ClusterSpec(k=8), noise=spec)
        run = experiment.Run(cfg, tmp_path / spec.kind, progress=False)
        dd = run.dataset()
        emb = run.embeddings(dd)
        clean = run.clustering(dd, emb)
        noisy, x, c, (flipped, duplicate) = run.variant("noisy", dd, emb, clean)
        n = len(dd["train"])
        changed = np.asarray(noisy["train"]["label"][:n]) != np.asarray(dd["train"]["label"])
        assert changed.any() and len(x) == len(noisy["train"]) == len(flipped) == int(c.sizes.sum())
        assert np.array_equal(changed, flipped[:n]) and duplicate[n:].all() and not duplicate[:n].any()
        copies = list(noisy["train"]["text"][n:])
        if spec.near_duplicates:
            assert set(copies) - set(dd["train"]["text"])  # perturbed texts, embedded on their own
            from jaxsel import embed
            np.testing.assert_allclose(x[n:], embed.encode(copies, "hash", max_length=128, progress=False), atol=1e-6)
            with monkeypatch.context() as m:  # a rerun reads the copies' embeddings from the stage folder
                m.setattr(embed, "encode", lambda *a, **k: pytest.fail("copies embedded again"))
                np.testing.assert_array_equal(run.variant("noisy", dd, emb, clean)[1], x)
        else:
            assert set(copies) <= set(dd["train"]["text"])
    # groups = "independent": whole groups of a second k-means are flipped, which the run's clusters cut across
    cfg = RunConfig(data=DataSpec(name=str(tmp_path / "d.csv")), embed=EmbedSpec(model="hash"),
                    cluster=ClusterSpec(k=8), noise=NoiseSpec(groups="independent", flip_fraction=0.5))
    run = experiment.Run(cfg, tmp_path / "independent", progress=False)
    dd = run.dataset()
    emb = run.embeddings(dd)
    clean = run.clustering(dd, emb)
    noisy, x, c, (flipped, _) = run.variant("noisy", dd, emb, clean)
    n = len(dd["train"])
    groups = cluster.kmeans(emb["train"], 8, seed=clean.meta["seed"] + 1).assignment
    share = lambda a: np.bincount(a, flipped[:n], 8) / np.bincount(a, minlength=8)
    assert set(share(groups)) == {0.0, 1.0} and len(set(share(clean.assignment)) - {0.0, 1.0}) >= 2
    np.testing.assert_array_equal(c.assignment[:n], clean.assignment)


def test_shipped_configs_load():
    from pathlib import Path
    root = Path(__file__).parent.parent / "configs"
    names = sorted(p.stem for p in root.glob("*.toml"))
    assert {"quick", "tweets-cpu", "rotten_tomatoes-cpu"} <= set(names)
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("error", JaxselWarning)  # no shipped config sets what it does not use
            cfg = experiment.load_config(root / name)
        assert cfg.name == name


def test_a_file_where_the_stage_folder_goes_is_one_line(tmp_path, tmp_cache, capsys):
    """``stages = PATH`` naming a file (a new user's round: "cannot write PATH: File exists")."""
    data = write_data(tmp_path / "d.csv")
    cfg = write_config(tmp_path / "tiny.toml", methods=("random",), variants=("clean",))
    in_the_way = tmp_path / "notes.txt"
    in_the_way.write_text("mine\n")
    cfg.write_text(f"stages = {str(in_the_way)!r}\n" + cfg.read_text())
    assert cli.main(["run", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    said = capsys.readouterr().err
    err = said.strip().splitlines()[-1]
    assert err == f"jaxsel: error: cannot write {in_the_way}: a file is there, where a folder is needed"
    assert "made now" not in said  # round 32: a note had called the file a missing folder, made now
    assert in_the_way.read_text() == "mine\n"


def test_a_stage_folder_made_anew_is_noted(tmp_path, tmp_cache, capsys, monkeypatch):
    """A relative ``stages`` path read from another working folder made a new empty folder there and
    recomputed every stage without a word (a new user's round)."""
    data = write_data(tmp_path / "d.csv")
    cfg = write_config(tmp_path / "tiny.toml", methods=("random",), variants=("clean",))
    cfg.write_text('stages = "shared/stages"\n' + cfg.read_text())
    monkeypatch.chdir(tmp_path)

    def stop(*_):
        raise cli.JaxselError("stopped after the stage folder is made")

    monkeypatch.setattr(experiment.Run, "embeddings", stop)
    for note in (True, False):  # the second run finds the folder
        assert cli.main(["run", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert (f"note: the stage folder {tmp_path / 'shared' / 'stages'} (`stages`) does not exist" in err) == note
        assert (tmp_path / "shared" / "stages").is_dir()
    # "~/..." is the home folder's, not a folder named "~" (round 32)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg.write_text(cfg.read_text().replace('stages = "shared/stages"', 'stages = "~/stages"'))
    assert cli.main(["run", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert (tmp_path / "home" / "stages").is_dir() and not (tmp_path / "~").exists()


def test_data_override_names_the_columns_the_config_still_sets(tmp_path, capsys):
    """``--data`` with a config whose [data] names columns: a note says which still apply (a new
    user's round: "missing column 'review'" without saying it came from the config)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "a.csv"\ntext_col = "review"\nlabel_col = "sentiment"\n')
    loaded = experiment.load_config(cfg, name="b.jsonl", label_col="y")
    assert (loaded.data.name, loaded.data.text_col, loaded.data.label_col) == ("b.jsonl", "review", "y")
    assert capsys.readouterr().err.strip() == (
        f"note: the dataset given (b.jsonl) replaces {cfg}'s; its [data] text_col = 'review' still applies "
        "(give text_col, label_col, split_col to change them: --text-col, --label-col, --split-col on the command line; "
        "--split-col '' for none)")
    experiment.load_config(cfg, name="b.jsonl", text_col="t", label_col="y")
    assert capsys.readouterr().err == ""
    cfg.write_text('[data]\ntext_col = "review"\n[cluster]\nk = -4\n')  # a mistake stays one line: the note comes after the checks
    assert cli.main(["run", "--config", str(cfg), "--data", str(tmp_path / "x.csv")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"jaxsel: error: {cfg} [cluster]: k must be at least 1, got -4"]


def test_data_overrides_apply_to_a_runconfig_too(tmp_path, monkeypatch):
    """Round 42: run(RunConfig, name=..., min_class_rows=...) named its folder after the overrides and ran
    the config's own data, an unknown override accepted."""
    ran = []
    monkeypatch.setattr(experiment, "Run", lambda cfg, out, *a, **k: ran.append((cfg, out)) or pytest.fail("ran"))
    cfg = experiment.RunConfig(name="ov", data={"name": "a.csv", "text_col": "review"})
    with pytest.raises(pytest.fail.Exception):
        experiment.run(cfg, progress=False, name=str(tmp_path / "b.csv"), min_class_rows=10, label_col=None)
    (used, out), = ran
    assert (used.data.name, used.data.min_class_rows, used.data.text_col, used.data.label_col) == \
        (str(tmp_path / "b.csv"), 10, "review", "label")
    assert str(out) == experiment.default_out("ov", {"name": str(tmp_path / "b.csv"), "min_class_rows": 10})
    assert cfg.data.name == "a.csv"  # the caller's config is left as it was


def test_budgets_that_cannot_run_are_refused_before_any_work(tmp_path, table_file, tmp_cache):
    """budgets = [0.05, 0.0500001] ran every method twice and reported two "5%" groups of the same
    size (a new user's test; only equal fractions were refused): refused once the train split is known."""
    from jaxsel import data
    from jaxsel.config import DataSpec, EmbedSpec, RunConfig
    from jaxsel.errors import JaxselError
    from jaxsel.selection import check_budgets
    n = len(data.load(str(table_file))["train"])
    cfg = RunConfig(data=DataSpec(name=str(table_file)), embed=EmbedSpec(model="hash"), budgets=(0.1, 0.1 + 0.1 / n))
    with pytest.raises(JaxselError, match=rf"budgets 0.1 and 0.1\d* both select {round(0.1 * n)} of the {n} train"):
        experiment.run(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "stages").exists()
    check_budgets((0.1, 0.1 + 1.0 / n), n)  # one example apart: both run
    # from a file: named as its other errors are, the two budgets told apart however near they are
    toml = tmp_path / "near.toml"
    toml.write_text(f'budgets = [0.1, 0.100000000001]\n[data]\nname = "{table_file}"\n[embed]\nmodel = "hash"\n')
    with pytest.raises(JaxselError, match=rf"^{re.escape(str(toml))}: budgets 0.1 and 0.100000000001 both select"):
        experiment.run(toml, tmp_path / "out", progress=False)
    # a budget rounding to every train row: refused before any work for the baselines too (they ran
    # it as the whole split, the searches stopped after clustering), quoting the budget as written
    for methods in (("stratified", "random"), ("greedy",)):
        cfg = RunConfig(data=DataSpec(name=str(table_file)), embed=EmbedSpec(model="hash"), methods=methods,
                        budgets=(0.05, 0.9999999))
        with pytest.raises(JaxselError, match=f"a budget of 0.9999999 of {n} train rows rounds to all of them"):
            experiment.run(cfg, tmp_path / "out", progress=False)
        assert not (tmp_path / "out" / "stages").exists()


def test_too_few_unflagged_rows_stop_a_run_before_any_finetune(tmp_path, table_file, tmp_cache, monkeypatch):
    """A budget larger than the rows cleanlab leaves stopped a run at the cleanlab baseline's (or a
    filtered search's) first cell, after the finetunes of every cell before it (a new user's
    round): now before the first cell."""
    from jaxsel import data, label_issues
    from jaxsel.config import ClusterSpec, DataSpec, EmbedSpec, RunConfig, SelectSpec
    from jaxsel.errors import JaxselError
    n = len(data.load(str(table_file))["train"])
    monkeypatch.setattr(label_issues, "find", lambda p, labels, *a, **k: np.arange(len(labels)) % 2 == 0)
    monkeypatch.setattr(experiment.Run, "finetune", lambda *a, **k: pytest.fail("a cell ran"))
    for methods, filter_, message in ((("stratified", "cleanlab"), "none", f"cleanlab: only {n // 2} examples are not"),
                                      (("stratified", "greedy"), "cleanlab", f"filter leaves {n // 2} of {n} train rows")):
        cfg = RunConfig(data=DataSpec(name=str(table_file)), embed=EmbedSpec(model="hash"), methods=methods,
                        cluster=ClusterSpec(k=4), budgets=(0.05, 0.6), select=SelectSpec(filter=filter_))
        with pytest.raises(JaxselError, match=message):
            experiment.run(cfg, tmp_path / "out", progress=False)


def test_default_run_folders_tell_data_files_and_readings_apart(tmp_path):
    """``jaxsel run --data FILE`` named its folder runs/NAME-STEM: a/reviews.csv and b/reviews.csv, or
    one file read with other columns, replaced each other's report. A built-in name keeps its
    short folder."""
    for side in "ab":
        (tmp_path / side).mkdir()
        (tmp_path / side / "reviews.csv").write_text("text,label\n")
    none = dict(text_col=None, label_col=None, split_seed=None)
    outs = [experiment.default_out("quick", dict(none, name=str(tmp_path / side / "reviews.csv"))) for side in "ab"]
    outs.append(experiment.default_out("quick", dict(none, name=str(tmp_path / "a" / "reviews.csv"), text_col="review")))
    assert len(set(outs)) == 3 and all(o.startswith("runs/quick-reviews-") for o in outs)
    assert experiment.default_out("quick", dict(none, name="tweets")) == "runs/quick-tweets"
    assert experiment.default_out("quick", none) == "runs/quick"


def test_run_notes_a_copy_named_like_another_run(tmp_path, capsys, monkeypatch):
    """An edited copy of a shipped config keeps its `name`, so its results go to that run's folder:
    a note says where, and a folder holding another config file's results says they are replaced (a
    new user's copy of quick.toml replaced the main job's report without a word)."""
    from jaxsel.errors import JaxselError
    from jaxsel.io import write_json
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path / "mine.toml")  # name = "tiny"
    with pytest.raises(JaxselError, match="no such file: missing.csv"):  # stops after the notes
        experiment.run(cfg, progress=False, name="missing.csv")
    # the advice names what exists: break-it round 52 added `out = ...` to the config, an unknown key
    assert "mine.toml names its run 'tiny' (its `name`; 'run' where it gives none): the results go to runs/tiny-missing; " \
        "set `name`, or give an output folder (--out; run(..., out=) from Python)" in capsys.readouterr().err
    write_json(tmp_path / "o" / "results.json", {"config_file": "/elsewhere/quick.toml"})
    with pytest.raises(JaxselError, match="no such file: missing.csv"):
        experiment.run(cfg, tmp_path / "o", progress=False, name="missing.csv")
    assert "o holds the results of another config file (/elsewhere/quick.toml)" in capsys.readouterr().err
    write_json(tmp_path / "o" / "results.json", {"config_file": str(cfg.resolve())})
    with pytest.raises(JaxselError, match="no such file: missing.csv"):
        experiment.run(cfg, tmp_path / "o", progress=False, name="missing.csv")
    assert "another config file" not in capsys.readouterr().err


def test_a_rerun_on_changed_data_says_its_stages_are_computed_anew(tmp_path, capsys):
    """Break-it round 52: after one label of the data file changed, a rerun into the same folder
    recomputed every stage (the stage keys hold the data's fingerprint) without saying why, where a
    changed setting says what it reused."""
    from jaxsel import data
    from jaxsel.io import write_json
    dd = data.load(str(write_data(tmp_path / "d.csv")), split_col="split")
    write_json(tmp_path / "o" / "results.json", {"dataset": {"fingerprint": data.dataset_fingerprint(dd)}})
    experiment._note_other_data(tmp_path / "o", dd)
    assert capsys.readouterr().err == ""  # the same data: no note
    edited = data.load(str(write_data(tmp_path / "e.csv", test_labels_seed=1)), split_col="split")
    experiment._note_other_data(tmp_path / "o", edited)
    assert f"note: {tmp_path / 'o'} holds the results of other data (dataset fingerprint " in capsys.readouterr().err
    experiment._note_other_data(tmp_path / "none", edited)  # no results yet
    assert capsys.readouterr().err == ""


def test_a_cell_another_run_computes_in_a_shared_stage_folder_is_waited_for_then_reused(tmp_path, tmp_cache,
                                                                                          monkeypatch):
    """Two runs sharing a stage folder (``stages = ...``, as bench/runbg.sh's seed parts) that reach one
    cell at once both searched it and created and deleted each other's checkpoint steps (round 30 of new
    users' tests: orbax's "Unable to find the step 20 for deletion"). A cell's folder is now locked while
    it is computed: the second run says so, waits, and reuses the first's result instead of searching."""
    import io
    import subprocess
    import sys
    from jaxsel import agents
    data = write_data(tmp_path / "d.csv")
    cfg = write_config(tmp_path / "tiny.toml", methods=("greedy", "random"), variants=("clean",))
    cfg.write_text(cfg.read_text().replace("seeds = [0, 1]", "seeds = [0]"))
    out = tmp_path / "run"
    doc = experiment.run(cfg, out, progress=False, name=str(data))
    [chosen] = (out / "stages").glob("clean-greedy-*-s0-*/selection.json")
    kept, go = tmp_path / "selection.json", tmp_path / "go"
    shutil.move(chosen, kept)
    holder = subprocess.Popen(  # "another run": holds the cell until this one waits, then leaves its result there
        [sys.executable, "-c", "import shutil, sys, time\nfrom pathlib import Path\nfrom jaxsel.io import exclusive\n"
         "with exclusive(sys.argv[1]):\n    print('held', flush=True)\n    t = time.time()\n"
         "    while not Path(sys.argv[2]).exists() and time.time() - t < 300:\n        time.sleep(0.05)\n"
         "    shutil.copy(sys.argv[3], sys.argv[4])", str(chosen.parent), str(go), str(kept), str(chosen)],
        stdout=subprocess.PIPE, text=True)

    class Stderr(io.StringIO):
        def write(self, s):
            if "waiting for it" in s:
                go.touch()
            return super().write(s)
    err = Stderr()
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(sys, "stderr", err)
        monkeypatch.setattr(agents, "select", lambda *a, **k: pytest.fail("searched a cell another run computed"))
        again = experiment.run(cfg, out, progress=False, name=str(data))
    finally:
        holder.kill()
        holder.wait()
    assert f"note: another jaxsel process is computing {chosen.parent}: waiting for it" in err.getvalue()
    keep = ("variant", "method", "seed", "examples", "proxy_accuracy", "test_accuracy")
    assert [{k: r.get(k) for k in keep} for r in again["rows"]] == [{k: r.get(k) for k in keep} for r in doc["rows"]]


def test_the_mask_map_takes_the_runs_quota_whatever_method_comes_first(tmp_path):
    """The mask map took its quota from the first selection it was given; a baseline's records 0 (it
    reads no granularity: agents.READS). Runs hand it only the searches' selections, but it now reads
    the run's [select] itself: the map's greedy subset is the rows greedy exports, cluster by cluster."""
    from test_agents import known_truth
    from jaxsel import agents, proxy
    from jaxsel.config import RunConfig, SelectSpec
    x, y, cl, xv, yv = known_truth()
    p = proxy.make(x, y, cl, xv, yv)
    quota = dict(granularity="quota", horizon=8)  # 240 of 2,400 rows in picks of 30 from clusters of 60
    sels = {m: agents.select(p, cl, y, agents.SelectConfig(method=m, budget=0.1, **quota), progress=False)
            for m in ("stratified", "greedy")}
    assert sels["stratified"].meta["quota"] == 0 and sels["greedy"].meta["quota"] == 30
    mp = experiment.Run(RunConfig(select=SelectSpec(**quota)), tmp_path, progress=False).explored(
        0.1, p, cl, sels, [None, None], y, samples=4)
    taken = mp["masks"][mp["kinds"].index("greedy")] * np.asarray(cl.sizes)
    np.testing.assert_allclose(taken, np.bincount(cl.assignment[sels["greedy"].indices], minlength=cl.k), atol=1e-4)


def test_a_run_warns_when_its_subsets_train_too_few_steps_per_class(tmp_path, capsys):
    """A 5% of 2,000 rows at batch 16 for 3 epochs is 21 optimizer steps: for 10 classes (a user's
    merged file: loss 1.1-1.3 against chance's 2.3) the run says so and names min_steps; for 3
    classes, or with min_steps = 100, or for full data alone it does not."""
    import dataclasses

    from jaxsel import errors
    from jaxsel.finetune import planned_steps

    def warned(classes, **kwargs) -> bool:
        cfg = experiment.RunConfig(**kwargs)
        errors._warned.clear()  # each case as a new process: one warned once would hide the next
        capsys.readouterr()
        experiment.Run(cfg, tmp_path / "run", progress=False)._check_steps(2000, classes)
        err = capsys.readouterr().err
        return "optimizer steps (100 examples" in err and err
    ft = config.FinetuneConfig(batch_size=16, epochs=3, min_steps=0)
    assert planned_steps(ft, 100) == (21, 3) and planned_steps(dataclasses.replace(ft, min_steps=100), 100) == (105, 15)
    assert "min_steps = 100 trains every subset" in warned(10, budgets=(0.05,), finetune=ft)
    # more classes: the advice names enough steps to clear the floor itself (it had named 100 for 30 classes)
    assert "min_steps = 150 trains every subset" in warned(30, budgets=(0.05,), finetune=ft)
    assert not warned(3, budgets=(0.05,), finetune=ft)
    assert not warned(10, budgets=(0.05,), finetune=dataclasses.replace(ft, min_steps=100))
    assert not warned(10, budgets=(0.05,), finetune=ft, methods=("full",))


def test_a_cap_above_a_split_uses_all_its_rows_and_says_so(tmp_path, capsys):
    """Round 39: max_test = 800 of a 418-row test split used all of them without a word (the docs
    said a cap draws exactly that many rows)."""
    from jaxsel.config import DataSpec
    csv = write_data(tmp_path / "d.csv")
    dd = experiment.load_dataset(DataSpec(name=str(csv), split_col="split", max_train=30, max_test=800))
    assert len(dd["train"]) == 30 and len(dd["test"]) == 54
    assert "[data] max_test = 800 exceeds the 54 test rows: all are used" in capsys.readouterr().err
