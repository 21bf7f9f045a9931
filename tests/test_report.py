import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxsel.errors import JaxselError
from jaxsel.experiment import report


def test_mean_ci_closed_form():
    v = [0.70, 0.74, 0.75]
    mean, half = report.mean_ci(v)
    assert mean == pytest.approx(np.mean(v))
    assert half == pytest.approx(4.3027 * np.std(v, ddof=1) / np.sqrt(3), rel=1e-4)  # t(0.975, 2 df) = 4.3027
    assert report.mean_ci([0.5]) == (0.5, None)  # no interval (was 0.0: read as no uncertainty)
    assert report.pm(0.5, None) == "0.500" and report.pm(0.01, 0.02, "+.1f") == "+0.0 ± 0.0"


def _rows():
    rows = []
    for seed, (a, b, f) in enumerate([(0.7, 0.6, 0.8), (0.72, 0.62, 0.78)]):
        rows += [dict(variant="noisy", method="ppo", budget=0.05, seed=seed, test_accuracy=a, test_macro_f1=a,
                      selection_seconds=10.0, finetune_seconds=5.0, examples=100, corrupted_chosen=3),
                 dict(variant="noisy", method="random", budget=0.05, seed=seed, test_accuracy=b, test_macro_f1=b,
                      selection_seconds=0.0, finetune_seconds=5.0, examples=100, corrupted_chosen=30),
                 dict(variant="noisy", method="full", budget=None, seed=seed, test_accuracy=f, test_macro_f1=f,
                      selection_seconds=0.0, finetune_seconds=100.0, examples=2000, corrupted_chosen=600)]
    return rows


def test_summarize_groups_and_charges_the_pipeline_to_search_methods():
    timings = {"embed_seconds": 20.0, "cluster_seconds": 2.0, "proxy_seconds_noisy": 3.0}
    s = {x["method"]: x for x in report.summarize(_rows(), timings)}
    assert [x["method"] for x in report.summarize(_rows(), timings)] == ["ppo", "random", "full"]
    assert s["ppo"]["test_accuracy"] == pytest.approx(0.71)
    assert s["ppo"]["total_seconds"] == pytest.approx(25 + 10 + 5)
    assert s["ppo"]["total_vs_full"] == pytest.approx(40 / 100)
    assert s["random"]["total_seconds"] == pytest.approx(5.0)
    assert s["full"]["corrupted_chosen"] == 600 and s["ppo"]["seeds"] == [0, 1]
    table = report.markdown(report.summarize(_rows(), timings))
    assert s["ppo"]["vs_random"] == pytest.approx(0.10) and s["ppo"]["vs_random_ci95"] == pytest.approx(0.0)
    assert "vs_random" not in s["random"] and "vs_random" not in s["full"] and "vs_full" not in s["full"]
    assert s["ppo"]["vs_full"] == pytest.approx(-0.08)  # paired by seed within the variant
    assert s["ppo"]["vs_full_ci95"] == pytest.approx(12.7062 * np.std([-0.1, -0.06], ddof=1) / np.sqrt(2), rel=1e-4)
    assert "| noisy | ppo | 5% | 2 | 0.710 ± 0.127 | +0.100 ± 0.000 | -0.080 ± 0.254 |" in table and "corrupted chosen" in table
    assert "| 3 |" in table.splitlines()[2]  # the total alone: these rows do not split it


def test_cleanlabs_flagging_is_charged_to_the_rows_that_use_it():
    """The cleanlab flags were computed outside every timer: the cleanlab baseline and the searches
    choosing among unflagged rows paid nothing for them (a new user's round)."""
    rows = [dict(r, method=m) for r in _rows() if r["method"] == "random" for m in ("cleanlab", "stratified")]
    rows += _rows()
    timings = {"embed_seconds": 20.0, "cluster_seconds": 2.0, "proxy_seconds_noisy": 3.0,
               "cleanlab_seconds_noisy": 7.0, "filter_seconds_noisy": 11.0, "filter_seconds_clean": 99.0}
    s = {x["method"]: x["total_seconds"] for x in report.summarize(rows, timings)}
    assert s == pytest.approx({"cleanlab": 22 + 3 + 7 + 5, "stratified": 22 + 5, "ppo": 22 + 3 + 11 + 10 + 5,
                               "random": 5.0, "full": 100.0})


def test_one_seed_has_no_interval_in_the_json_either():
    """results.json gave one seed's rows test_accuracy_ci95 = 0.0 and vs_*_ci95 = 0.0 (a new user's
    test), read as no uncertainty; the report's table already printed no interval: now null."""
    one = [r for r in _rows() if r["seed"] == 0]
    s = {x["method"]: x for x in report.summarize(one, {})}
    assert s["ppo"]["test_accuracy_ci95"] is None and s["ppo"]["vs_random_ci95"] is None
    assert s["ppo"]["vs_full_ci95"] is None and s["ppo"]["vs_random"] == pytest.approx(0.10)
    assert "| noisy | ppo | 5% | 1 | 0.700 | +0.100 | -0.100 |" in report.markdown(report.summarize(one, {}))


def test_corrupted_rows_split_into_flipped_and_copies():
    rows = [dict(r, flipped_chosen=r["corrupted_chosen"] - s, duplicates_chosen=s)
            for r, s in zip(_rows(), (1, 10, 200, 2, 12, 200))]
    s = {x["method"]: x for x in report.summarize(rows, {})}
    assert (s["ppo"]["flipped_chosen"], s["ppo"]["duplicates_chosen"]) == (1.5, 1.5)
    assert (s["random"]["flipped_chosen"], s["random"]["duplicates_chosen"]) == (19.0, 11.0)
    # "(19 + 11)" read as a sum: with instance or source noise a copy of a flipped row is both
    lines = report.markdown(list(s.values())).splitlines()
    assert lines[3].endswith("| 30 (19 flipped, 11 copies) |")
    # means over seeds keep their half: 4.5 of 1.5 flipped and 1.5 copies printed "4 (2 flipped, 2 copies)"
    # (round half to even), more than the two together (break-it round 36)
    assert lines[2].endswith("| 3 (1.5 flipped, 1.5 copies) |")


def test_plots_are_written(tmp_path):
    summary = report.summarize(_rows(), {})
    report.plot_accuracy(summary, tmp_path / "a.png")
    report.plot_wallclock(summary, {}, tmp_path / "w.png")
    masks = np.random.default_rng(0).random((40, 10)) < 0.3
    report.plot_mask_map({"noisy": {"masks": masks, "scores": masks.mean(1), "kinds": ["sampled"] * 39 + ["ppo"]}},
                         tmp_path / "m.png")
    # one cluster ([cluster] k = 1: a traceback at the end of a whole run), or one mask: one component
    one = {"masks": np.ones((5, 1), bool), "scores": np.linspace(0, 1, 5), "kinds": ["sampled"] * 4 + ["ppo"]}
    report.plot_mask_map({"clean": one, "noisy": dict(one, masks=masks[:1], scores=[0.5], kinds=["ppo"])},
                         tmp_path / "m1.png")
    for name in ("a.png", "w.png", "m.png", "m1.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_label_mix_and_missing_classes_and_one_seed_has_no_interval():
    rows = [dict(r, label_counts=[60, 40, 0] if r["method"] == "ppo" else [70, 25, 5],
                 train_label_counts=[1400, 500, 100]) for r in _rows() if r["seed"] == 0]
    s = {x["method"]: x for x in report.summarize(rows, {})}
    assert s["ppo"]["label_share"] == pytest.approx([0.6, 0.4, 0.0]) and s["ppo"]["missing_classes"] == [2]
    assert s["random"]["missing_classes"] == [] and s["full"]["train_label_share"] == pytest.approx([0.7, 0.25, 0.05])
    table = report.markdown(report.summarize(rows, {}), ["a", "b", "c"])
    assert "| noisy | ppo | 5% | 1 | 0.700 | +0.100 |" in table and "±" not in table
    assert "| 60/40/0 |" in table
    assert "missing classes: noisy ppo 5% selected no example of class 'c'" in table and "train 70/25/5" in table


def test_every_method_is_paired_with_random_stratified_and_cleanlab():
    rows = _rows() + [dict(r, method="stratified", test_accuracy=r["test_accuracy"] + 0.05 * (1 + r["seed"]))
                      for r in _rows() if r["method"] == "random"]
    rows += [dict(r, method="cleanlab", test_accuracy=0.69 + 0.04 * r["seed"]) for r in _rows() if r["method"] == "random"]
    s = {x["method"]: x for x in report.summarize(rows, {"embed_seconds": 20.0, "cluster_seconds": 2.0})}
    assert s["ppo"]["vs_stratified"] == pytest.approx(np.mean([0.7 - 0.65, 0.72 - 0.72]))
    assert s["ppo"]["vs_cleanlab"] == pytest.approx(np.mean([0.7 - 0.69, 0.72 - 0.73]))
    assert s["stratified"]["vs_cleanlab"] == pytest.approx(np.mean([0.65 - 0.69, 0.72 - 0.73]))
    assert "vs_cleanlab" not in s["cleanlab"] and s["cleanlab"]["vs_stratified"] == pytest.approx(0.025)
    assert s["stratified"]["vs_random"] == pytest.approx(0.075) and "vs_stratified" not in s["stratified"]
    assert s["stratified"]["total_seconds"] == pytest.approx(22 + 5)  # embed + cluster, no proxy
    table = report.markdown(list(s.values()))
    assert "vs stratified, paired" in table and "vs cleanlab, paired" in table
    assert "| noisy | random | 5% | 2 | 0.610 ± 0.127 | - | -0.075" in table
    alone = report.markdown(report.summarize([r for r in _rows() if r["method"] != "random"], {}))
    assert "vs random" not in alone and "vs full, paired" in alone  # random did not run: no column of dashes


def _headline():
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("headline", Path(__file__).parent.parent / "bench" / "headline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_headline_rows_verdicts_and_figure_entries(tmp_path):
    headline = _headline()
    rows = _rows() + [dict(r, method="stratified", test_accuracy=r["test_accuracy"] - 0.02 * (1 + r["seed"]))
                      for r in _rows() if r["method"] == "random"]
    noise = dict(kind="source", duplicate_fraction=0.1, near_duplicates=True)
    doc = dict(config=dict(name="x-whole", data=dict(name="x"), noise=noise), rows=rows, timings={})
    sixteenth = dict(doc, config=dict(doc["config"], name="x-whole-16th"),
                     rows=[dict(r, budget=1 / 16) if r["budget"] else r for r in rows])
    hr = {r["method"]: r for r in headline.rows_of(doc, 0.05)}
    assert set(hr) == {"ppo", "random", "stratified", "full"} and hr["ppo"]["noise"] == "source + near-dup"
    assert hr["ppo"]["vs_stratified"] == pytest.approx(np.mean([0.7 - 0.58, 0.72 - 0.58]))
    assert hr["ppo"]["verdict"] == "wins" and hr["random"]["verdict"] == "ties"  # random - stratified: 0.02, 0.04
    assert report.verdict(-0.05, 0.01, 3) == "loses" and report.verdict(0.05, 0.01, 1) == "-"
    # science audit (round 47): 3 pairs all +0.01 (an interval of width 0) were "wins", a NaN "ties"; the sign
    # test decides pairs that differ alike (binomial, two-sided: 2 x 0.5^n under 0.05 from 6 pairs)
    assert [report.verdict(0.01, 0.0, n) for n in (3, 5, 6)] == ["ties", "ties", "wins"]
    assert report.verdict(0.01, 1e-17, 3) == "ties" and report.verdict(0.01, 1e-3, 3) == "wins"
    assert report.verdict(-0.01, 0.0, 6) == "loses" and report.verdict(0.0, 0.0, 6) == "ties"
    assert report.verdict(float("nan"), float("nan"), 3) == "-" == report.verdict(0.01, float("nan"), 3)
    diffs = report.mean_ci([0.01, 0.01, 0.01])
    assert diffs[1] == 0.0 and report.verdict(*diffs, 3) == "ties"
    entries = headline.figure_entries([doc, sixteenth])["x"]
    keys = [(e["variant"], e["method"], e["budget"]) for e in entries]
    assert len(keys) == len(set(keys)) == 4 + 3  # full data once; 5% and 1/16 of the three subset methods
    report.plot_accuracy(entries, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _doc(seeds, rows, complete=True, **config):
    return {"config": {"name": "x", "seeds": seeds, "methods": ["ppo", "random", "full"], **config},
            "dataset": {"name": "d"}, "timings": {"embed_seconds": 20.0 + seeds[0]}, "rows": rows,
            "environment": {"date": f"day {seeds[0]}"}, "run_seconds": 100.0 * len(seeds), "complete": complete}


def test_merge_joins_seed_parts_into_the_summary_of_all_rows():
    rows = _rows()
    by_seed = lambda s: [r for r in rows if r["seed"] == s]
    # a stopped run (config seeds 0-1, only seed 0 done) and the missing seed run elsewhere
    doc = report.merge([_doc([1], by_seed(1)), _doc([0, 1], by_seed(0), complete=False)])
    assert doc["config"]["seeds"] == [0, 1] and doc["complete"]
    assert [r["seed"] for r in doc["rows"]] == [0, 0, 0, 1, 1, 1]
    assert doc["summary"] == report.summarize(rows, {"embed_seconds": 20.0})  # the lowest seed's shared timings
    assert [p["seeds"] for p in doc["parts"]] == [[0], [1]] and doc["run_seconds"] == 300.0
    again = report.merge([doc])  # a merged document merges again without nesting its parts
    assert again["parts"] == doc["parts"] and again["summary"] == doc["summary"]
    short = report.merge([_doc([0, 1], by_seed(0), complete=False), _doc([1], by_seed(1)[:2], complete=False)])
    assert not short["complete"]


def test_merge_refuses_different_configs_and_repeated_cells():
    rows = _rows()
    with pytest.raises(JaxselError, match="differ in budgets"):
        report.merge([_doc([0], rows[:3]), _doc([1], rows[3:], budgets=["0.1"])])
    with pytest.raises(JaxselError, match="two parts hold the cell"):
        report.merge([_doc([0], rows[:3]), _doc([0], rows[:1])])
    # a dataset summary that a newer jaxsel records more of (split_column, 2026-12-07) is the same dataset;
    # one whose recorded fields differ is not
    newer = dict(_doc([1], rows[3:]), dataset={"name": "d", "split_column": True})
    assert report.merge([_doc([0], rows[:3]), newer])["complete"]
    with pytest.raises(JaxselError, match="different datasets"):
        report.merge([_doc([0], rows[:3]), dict(newer, dataset={"name": "e"})])
    # parts may keep their stage cache in different folders (bench/runbg.sh's seed parts share one)
    assert report.merge([_doc([0], rows[:3]), _doc([1], rows[3:], stages="runs/x/stages")])["complete"]
    # a field added to the config later, at its default, is no difference; set to another value it is
    old, new = {"name": "d", "seed": 0}, {"name": "d", "seed": 0, "dedup": False, "split_seed": 0}
    assert report.merge([_doc([0], rows[:3], data=old), _doc([1], rows[3:], data=new)])["complete"]
    with pytest.raises(JaxselError, match="differ in data"):
        report.merge([_doc([0], rows[:3], data=old), _doc([1], rows[3:], data=dict(new, dedup=True))])
    # a difference against a field's former default names the value that ran, not None (min_steps: 0 until 2026-12-07)
    with pytest.raises(JaxselError, match=r"differ in finetune.min_steps \(0 in the part of seeds \[0\], 100 in"):
        report.merge([_doc([0], rows[:3], finetune={"epochs": 3}),
                      _doc([1], rows[3:], finetune={"epochs": 3, "min_steps": 100})])
    # the agents' settings: a part from before they were recorded ran its tables over the defaults of
    # then (the early network), so it merges with a part that pinned "early", not with a late one
    import dataclasses
    from jaxsel.agents.ppo import PPOConfig
    ran = lambda **kw: {"ppo": dataclasses.asdict(PPOConfig(**kw))}  # noqa: E731  (rl_steps: the default's)
    then = dict(network="early", clip_value=True)  # and the value clipped (until 2026-12-06)
    old, pinned = _doc([0], rows[:3]), dict(_doc([1], rows[3:], select={"ppo": then}), agents=ran(**then))
    assert report.merge([old, pinned])["agents"] == ran(**then) == report.recorded_agents(old)
    # a part that recorded its agents before clip_value existed ran it clipped: it merges with a part pinning that
    recorded = dict(_doc([0], rows[:3]), agents={"ppo": {k: v for k, v in ran(**then)["ppo"].items() if k != "clip_value"}})
    assert report.merge([recorded, pinned])["complete"]
    with pytest.raises(JaxselError, match=r"differ in agents.ppo.clip_value \(True in the part of seeds \[0\], False"):
        report.merge([recorded, dict(pinned, agents=ran(network="early"))])
    late = dict(_doc([1], rows[3:]), agents=ran(network="late"))
    assert report.merge([dict(_doc([0], rows[:3]), agents=ran(network="late")), late])["complete"]
    # a part computed before an algorithm changed (agents.revision; none recorded: the first) merges with none
    # after it: bench/merge.py joined an older jaxsel's CLIMB rows with the new one's (break-it round 37)
    revised = dict(pinned, revisions={"climb": 2})
    assert report.merge([dict(old, revisions={"climb": 2}), revised])["revisions"] == {"climb": 2}
    with pytest.raises(JaxselError, match=r"differ in revisions.climb \(absent in the part of seeds \[0\], 2 in"):
        report.merge([old, revised])
    # settings nothing read are no difference: [noise] without the noisy variant, rl_steps without an RL agent
    # (shipped configs dropped such keys; their committed results still recorded them); read, they differ
    clean = dict(variants=["clean"], methods=["greedy", "random"])
    assert report.merge([_doc([0], rows[:3], **clean, noise={"flip_fraction": 0.2}, select={"rl_steps": 10_000}),
                         _doc([1], rows[3:], **clean)])["complete"]
    with pytest.raises(JaxselError, match=r"differ in noise.flip_fraction \(0.2 in the part of seeds \[0\], absent"):
        report.merge([_doc([0], rows[:3], noise={"flip_fraction": 0.2}), _doc([1], rows[3:])])
    with pytest.raises(JaxselError, match=r"differ in agents.ppo.total_timesteps \(10000 in the part of seeds \[0\], 20000"):
        report.merge([_doc([0], rows[:3], select={"rl_steps": 10_000}), _doc([1], rows[3:])])
    from jaxsel.config import RunConfig
    assert report.revisions(RunConfig(methods=("climb", "greedy"))) == {"revisions": {"climb": 2}}
    assert report.revisions(RunConfig(methods=("ppo", "greedy"))) == {}
    with pytest.raises(JaxselError, match=r"agents.ppo.network \('early' in the part of seeds \[0\], "
                                         r"'late' in that of \[1\]\)"):
        report.merge([old, late])


def test_merge_names_what_is_not_a_part_and_every_difference(tmp_path):
    """Break-it round 41: a part that was not a results document ended bench/merge.py with a traceback
    (and a file that was no JSON with a message naming no file); parts that read the same file by two
    spellings of its path were refused; differences past the third were counted, not named."""
    rows = _rows()
    for bad in ([], {"rows": []}, dict(_doc([0], rows[:3]), complete="yes")):
        with pytest.raises(JaxselError, match=r"part 2 is not a run's results document \(a results.json with config, "):
            report.merge([_doc([1], rows[3:]), bad])
    same = {"name": "d", "fingerprint": "f1"}
    here = dict(_doc([0], rows[:3], data={"name": "many.jsonl"}), dataset=same)
    there = dict(_doc([1], rows[3:], data={"name": "./many.jsonl"}), dataset=same)
    assert report.merge([here, there])["complete"]  # the same content: the path is no difference
    with pytest.raises(JaxselError, match="different datasets"):
        report.merge([here, dict(there, dataset={"name": "d", "fingerprint": "f2"})])
    with pytest.raises(JaxselError, match=r"differ in data.name \('many.jsonl' .*, './many.jsonl' .*\)"):
        report.merge([dict(here, dataset={"name": "d"}), dict(there, dataset={"name": "d"})])  # no content to compare
    many = dict(_doc([1], rows[3:], budgets=["0.1"], name="y", k=3, proxy={"kind": "mlp"}, finetune={"lr": 1}))
    with pytest.raises(JaxselError, match=r"\) and 2 more: name, proxy.kind\)$"):
        report.merge([_doc([0], rows[:3]), many])
    # a table one side lacks is shortened, not spelled out whole (an agent's ~20 settings made a ~700-character line)
    with pytest.raises(JaxselError) as refused:
        report.merge([_doc([0], rows[:3]), _doc([1], rows[3:], methods=["random", "full"])])
    said = str(refused.value)
    assert re.search(r"agents.ppo \(\{'\w+': [^,]+, '\w+': [^,]+, '\w+': [^,]+, '\w+': [^,]+, \.\.\.\} in the part "
                     r"of seeds \[0\], absent in that of \[1\]\)", said) and len(said) < 300, said
    from jaxsel.config import describe_differences  # shortened alike, the values are shown whole (the review's case)
    eight = [f"0.0{i}" for i in range(1, 9)]
    assert describe_differences({"budgets": eight}, {"budgets": eight[:7] + ["0.5"]}, ("a", "b")) == \
        f"budgets ({eight!r} a, {eight[:7] + ['0.5']!r} b)"
    (tmp_path / "bad.json").write_text("{'not': json}")
    script = Path(__file__).parent.parent / "bench" / "merge.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "out"), str(tmp_path / "bad.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.startswith(f"error: {tmp_path / 'bad.json'}: not JSON (")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "bad.json"), str(tmp_path / "bad.json")],
                          capture_output=True, text=True, timeout=300)  # round 43: OUT left out, a FileExistsError
    assert done.returncode == 1 and done.stderr.strip() == \
        f"error: {tmp_path / 'bad.json'} is a file: the first argument is the folder the merged results go to"


def test_validated_picks_by_finetuned_validation_accuracy_and_pays_for_every_candidate():
    def row(method, seed, val, test, sel=0.0):
        return dict(variant="clean", method=method, budget=0.05, seed=seed, validation_accuracy=val, test_accuracy=test,
                    test_macro_f1=test, selection_seconds=sel, finetune_seconds=10.0, examples=100, corrupted_chosen=0)
    rows = [row("greedy", 0, 0.80, 0.78, 2.0), row("ppo", 0, 0.79, 0.70, 30.0), row("stratified", 0, 0.78, 0.75),
            row("greedy", 1, 0.70, 0.69, 2.0), row("ppo", 1, 0.71, 0.60, 30.0), row("stratified", 1, 0.72, 0.74),
            row("greedy", 2, 0.75, 0.71, 2.0), row("ppo", 2, 0.75, 0.72, 30.0), row("stratified", 2, 0.75, 0.70),
            *(row("random", s, 0.99, 0.5) for s in range(3))]  # not a candidate, whatever its validation score
    v = {r["seed"]: r for r in report.validated(rows)}
    assert [v[s]["picked"] for s in range(3)] == ["greedy", "stratified", "stratified"]  # a tie goes to stratified
    assert [v[s]["test_accuracy"] for s in range(3)] == [0.78, 0.74, 0.70]
    searches_tie = [r for r in rows if not (r["seed"] == 2 and r["method"] == "stratified")] + [
        row("stratified", 2, 0.70, 0.70)]
    assert {r["seed"]: r for r in report.validated(searches_tie)}[2]["picked"] == "ppo"  # then the first in ORDER
    assert v[0]["selection_seconds"] == pytest.approx(32.0) and v[0]["finetune_seconds"] == pytest.approx(30.0)
    s = {x["method"]: x for x in report.summarize(rows, {})}["validated"]
    assert s["picked"] == {"greedy": 1, "stratified": 2}
    assert s["vs_stratified"] == pytest.approx(np.mean([0.03, 0.0, 0.0]))
    assert "| clean | validated (greedy 1, stratified 2) | 5% | 3 |" in report.markdown([s])
    assert report.validated([r for r in rows if r["method"] != "stratified"]) == []  # nothing to check against
    assert report.validated([{k: x for k, x in r.items() if k != "validation_accuracy"} for r in rows]) == []
    assert sorted(r["seed"] for r in report.validated(rows[1:])) == [1, 2]  # seed 0 lacks greedy: no full check


def test_pools_pair_by_pool_and_seed_and_read_every_pool(tmp_path):
    import importlib.util
    import json
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("pools", Path(__file__).parent.parent / "bench" / "pools.py")
    pools = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pools)

    def row(method, seed, val, test):
        return dict(variant="clean", method=method, budget=0.05, seed=seed, validation_accuracy=val,
                    test_accuracy=test, examples=100, selection_seconds=0.0, finetune_seconds=10.0)
    # the same seed in two pools: two units, each paired within its own pool
    by_pool = {1: [row("greedy", 0, 0.80, 0.78), row("stratified", 0, 0.70, 0.74), row("full", 0, 0.9, 0.81)],
               2: [row("greedy", 0, 0.60, 0.70), row("stratified", 0, 0.65, 0.72)],
               3: [row("greedy", 0, 0.75, 0.80), row("stratified", 0, 0.70, 0.70)]}
    for p, rows in by_pool.items():
        (tmp_path / f"pool{p}").mkdir()
        (tmp_path / f"pool{p}" / "results.json").write_text(json.dumps({"rows": rows}))
    units = pools.units(tmp_path, (1, 2, 3))
    s = {x["method"]: x for x in pools.summarize(units)}
    d = [0.04, -0.02, 0.10]
    assert s["greedy"]["units"] == 3 and s["greedy"]["vs_stratified"] == pytest.approx(np.mean(d))
    assert s["greedy"]["vs_stratified_ci95"] == pytest.approx(report.mean_ci(d)[1])
    assert (s["greedy"]["vs_stratified_wins"], s["greedy"]["vs_stratified_losses"]) == (2, 1)
    assert s["validated"]["picked"] == {"greedy": 2, "stratified": 1}  # pool 2: stratified validates higher
    assert s["validated"]["vs_stratified"] == pytest.approx(np.mean([0.04, 0.0, 0.10]))
    assert "vs_cleanlab" not in s["greedy"] and "vs_stratified" not in s["stratified"] and "vs_full" not in s["full"]
    assert s["greedy"]["vs_full"] == pytest.approx(-0.03) and s["greedy"]["vs_full_ci95"] is None  # pool 1 only: no interval
    table = pools.markdown(pools.summarize(units))
    assert "| clean | validated (greedy 2, stratified 1) | 3 | 76.7 ± 10.3 | +4.7 ± 12.5 (2/0 of 3) | -3.0 (0/1 of 1) |" in table
    later = units + [dict(row("cleanlab", 0, 0.7, 0.75), pool=3)]  # a reference in the last pool only
    assert {x["method"]: x for x in pools.summarize(later)}["greedy"]["vs_cleanlab_by_pool"] == {
        "3/0": pytest.approx(0.05)}
    with pytest.raises(pools.JaxselError, match="pool 4 has no results"):
        pools.units(tmp_path, (1, 4))


def test_cpu_record_reads_model_and_simd_flags():
    x86 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu sse2 avx2 fma avx512f amx_bf16\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n"
    assert report.cpu(x86) == {"model": "Intel(R) Xeon(R) Platinum 8480+", "isa": ["avx2", "fma", "avx512f", "amx_bf16"]}
    assert report.cpu(arm)["isa"] == ["asimd", "sve"]
    assert report.environment()["cpu"]["model"]


def test_agents_sentence_names_network_and_preferences():
    """report.md's sentence on the agents names each one's steps, network and, when learned, the
    per-cluster preferences' rate. The steps are those run: whole updates (PPO: 64 environments x
    16 steps; DQN: its environments, 48 here), not the rl_steps asked (it said 2,000). It reads the
    document's recorded agents; a document from before they were recorded ran the early network."""
    from jaxsel.config import RunConfig, SelectSpec
    from jaxsel.experiment.report import _agents, agent_settings
    select = {"rl_steps": 2000, "ppo": {"network": "late", "preference_rate": 64.0}, "dqn": {"num_envs": 48}}
    cfg = {"methods": ["ppo", "dqn", "greedy"], "select": select}
    ppo_steps, dqn_steps = 2000 // (64 * 16) * 64 * 16, 2000 // 48 * 48
    legacy = (f" PPO {ppo_steps:,} environment steps, late network, per-cluster preferences at 64x its "
              f"learning rate, value clipped; DQN {dqn_steps:,} environment steps, early network "
              f"(`jaxsel.agents.networks`).")
    assert _agents({"config": cfg}) == legacy  # PPO's value was clipped then
    run = RunConfig(methods=("ppo", "dqn", "greedy"), select=SelectSpec(**select))
    agents = agent_settings(run)
    assert agents["ppo"]["total_timesteps"] == 2000 and agents["dqn"]["num_envs"] == 48
    assert _agents({"config": cfg, "agents": agents}) == legacy.replace(", value clipped", "").replace(
        "DQN 1,968 environment steps, early", f"DQN 1,968 environment steps, {agents['dqn']['network']}")
    plain = agent_settings(RunConfig(methods=("ppo", "random")))
    assert list(plain) == ["ppo"] and f"19,456 environment steps, {plain['ppo']['network']} network" in _agents(
        {"config": {"methods": ["ppo", "random"]}, "agents": plain})


def test_accuracy_bars_stay_within_zero_and_one(tmp_path, monkeypatch):
    """Two seeds' t intervals can pass 0 and 1 (0.083 +- 0.293 in a new user's run): the table keeps
    the interval, the plot draws its bars and the full-data band within [0, 1]."""
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig))
    summary = [{"variant": "clean", "method": "ppo", "budget": 0.05, "test_accuracy": 0.083, "test_accuracy_ci95": 0.293},
               {"variant": "clean", "method": "random", "budget": 0.05, "test_accuracy": 0.95, "test_accuracy_ci95": 0.2},
               {"variant": "clean", "method": "full", "budget": None, "test_accuracy": 0.9, "test_accuracy_ci95": 0.3}]
    report.plot_accuracy(summary, tmp_path / "a.png")
    ax = figures[0].axes[0]
    segments = [seg for c in ax.collections for seg in getattr(c, "get_segments", lambda: [])()]
    ys = np.concatenate([np.asarray(seg)[:, 1] for seg in segments])
    assert len(segments) == 2 and ys.min() == 0.0 and ys.max() == 1.0  # 0.083 - 0.293 and 0.95 + 0.2 cut
    band = [p for p in ax.patches if p.get_alpha() == 0.08][0]  # a Rectangle (matplotlib >= 3.9) or a Polygon
    low, high = (band.get_y(), band.get_y() + band.get_height()) if hasattr(band, "get_height") else \
        (band.get_xy()[:, 1].min(), band.get_xy()[:, 1].max())
    assert (low, high) == pytest.approx((0.6, 1.0))


def test_budgets_print_as_percentages_tiny_ones_by_their_digits():
    """A budget of 1e-9 of the rows was labelled "0%" in the table and its warnings."""
    assert [report.percent(b) for b in (0.05, 1 / 16, 0.001, 1e-9)] == ["5%", "6.25%", "0.10%", "1e-07%"]


def test_verdicts_pairs_and_repeated_subsets_are_in_the_table():
    """Round 27: report.md had no verdict column (only the README's headline did); a baseline missing a
    seed paired fewer seeds than the row's count said; a search that chose the same subset in every
    seed (greedy, given the run's one clustering) read as independent replicates."""
    rows = []
    for seed, (g, st) in enumerate([(0.75, 0.70), (0.76, 0.72), (0.74, 0.71)]):
        rows += [dict(variant="clean", method="greedy", budget=0.05, seed=seed, test_accuracy=g, test_macro_f1=g,
                      selection_seconds=1.0, finetune_seconds=5.0, examples=100, corrupted_chosen=0,
                      subset_digest="same"),
                 dict(variant="clean", method="random", budget=0.05, seed=seed, test_accuracy=st - 0.1,
                      test_macro_f1=st, selection_seconds=0.0, finetune_seconds=5.0, examples=100, corrupted_chosen=0,
                      subset_digest=f"r{seed}")]
        if seed < 2:
            rows.append(dict(rows[-1], method="stratified", test_accuracy=st, subset_digest=f"s{seed}"))
    s = {x["method"]: x for x in report.summarize(rows, {})}
    assert s["greedy"]["subsets"] == 1 and s["random"]["subsets"] == 3 and s["greedy"]["vs_stratified_pairs"] == 2
    assert s["greedy"]["verdict"] == report.verdict(s["greedy"]["vs_stratified"], s["greedy"]["vs_stratified_ci95"], 2)
    # -0.1 in both pairs: a zero-width interval below zero, which the sign test does not call from 2 pairs (round 47)
    assert s["random"]["verdict"] == "ties"
    table = report.markdown(list(s.values()))
    assert "| verdict vs stratified |" in table.splitlines()[0]
    assert "| clean | greedy | 5% | 3 (1 subset) | 0.750 ± 0.025 |" in table and "(2 pairs)" in table
    assert "| clean | random | 5% | 3 |" in table


def test_bench_merge_into_another_folder_keeps_the_mask_map_and_writes_results_last(tmp_path, monkeypatch):
    """Science audit (round 47): ``bench/merge.py`` into a new folder drew no mask map and its report
    dropped the image (the map survived only in a part's own folder), and it wrote results.json
    before report.md, where a run writes it last (complete: the report and plots are there)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import merge
    run = json.loads((Path(__file__).resolve().parent.parent / "bench" / "results" / "e2e-tweets-cpu" /
                      "results.json").read_text())  # a committed run of seeds 0-2, cut in two parts
    parts = []
    for name, seeds, done in (("a", [1, 2], [1, 2]), ("b", [0, 1, 2], [0])):  # b ran the first seed: its map
        (tmp_path / name).mkdir()
        parts.append(tmp_path / name / "results.json")
        parts[-1].write_text(json.dumps(dict(run, config=dict(run["config"], seeds=seeds), complete=name == "a",
                                             rows=[r for r in run["rows"] if r["seed"] in done])))
    (tmp_path / "b" / "mask_map.png").write_bytes(b"\x89PNG\r\n\x1a\nb's map")
    (tmp_path / "a" / "mask_map.png").write_bytes(b"\x89PNG\r\n\x1a\na's map")
    assert merge.main([str(tmp_path / "out"), *map(str, parts)]) == 0
    assert (tmp_path / "out" / "mask_map.png").read_bytes().endswith(b"b's map")
    assert "![explored masks](mask_map.png)" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["complete"]

    (tmp_path / "b" / "results.json").write_text(json.dumps(dict(json.loads(parts[1].read_text()), rows=[])))
    assert merge.main([str(tmp_path / "out"), *map(str, parts)]) == 0  # b stopped before its first seed's rows:
    assert not (tmp_path / "out" / "mask_map.png").exists()  # its folder's map is another run's, and so was out's
    assert "mask_map.png" not in (tmp_path / "out" / "report.md").read_text()
    parts[1].write_text(json.dumps(dict(run, config=dict(run["config"], seeds=[0, 1, 2]), complete=False,
                                        rows=[r for r in run["rows"] if r["seed"] == 0])))

    def killed(*args, **kwargs):
        raise RuntimeError("killed while drawing")
    monkeypatch.setattr(report, "write", killed)
    with pytest.raises(RuntimeError):
        merge.main([str(tmp_path / "again"), *map(str, parts)])
    assert not (tmp_path / "again" / "results.json").exists()
