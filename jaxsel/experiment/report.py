"""Summaries, tables and plots of a ``jaxsel run``: mean and 95% confidence interval over seeds.

``summarize(rows, timings)`` groups result rows by (variant, method, budget); ``markdown(summary)``
is the table printed at the end of a run and written to ``report.md``; ``write`` adds the plots:
accuracy vs budget, the wall-clock breakdown, and a 2-D PCA map of explored masks coloured by
proxy score (the paper's Figure 1).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from jaxsel import allocator, code_version
from jaxsel.config import BASELINES, SEARCH_METHODS
from jaxsel.errors import JaxselError
from jaxsel.io import atomic_path, write_utf8
from jaxsel.selection import AGENTS, class_list

ORDER = SEARCH_METHODS + ("validated",) + BASELINES  # the order of the report's rows
REFERENCES = ("random", "stratified", "cleanlab")  # baselines every other method is compared with, paired by seed


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "asimd", "sve")  # the ones matmul speed hangs on


def cpu(info: str | None = None) -> dict:
    """The CPU's model name and which of ``ISA_FLAGS`` it has, from ``info`` (default: /proc/cpuinfo
    on Linux; the platform's processor string and no flags elsewhere): results from different hosts
    differ by these more than by anything jaxsel does (fp32 matmul 127 vs 355 GFLOP/s on two 2-core hosts)."""
    if info is None:
        try:
            info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return {"model": platform.processor() or platform.machine(), "isa": []}
    field = lambda *names: next((line.split(":", 1)[1].strip() for line in info.splitlines()
                                 if line.split(":", 1)[0].strip() in names), "")
    flags = set(field("flags", "Features").split())
    return {"model": field("model name", "Processor", "cpu model") or platform.machine(),
            "isa": [f for f in ISA_FLAGS if f in flags]}


def environment() -> dict:
    """Date, Python, platform, CPU count, model and SIMD flags, JAX backend and device, package
    versions, and how malloc was set (:func:`jaxsel.allocator.describe`)."""
    import jax
    versions = {"jaxsel": code_version()}  # with its commit, from a git checkout
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "scikit-learn", "datasets", "pandas", "pyarrow"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    dev = jax.devices()[0]
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "cpu": cpu(), "backend": jax.default_backend(), "device": getattr(dev, "device_kind", str(dev)),
            "device_count": jax.device_count(), "versions": versions, "malloc": allocator.describe()}


def mean_ci(values) -> tuple[float, float | None]:
    """Mean and the half-width of its two-sided 95% Student-t interval (the quantile from
    ``scipy.stats.t``); the half-width None (null in JSON) for one value: it has no interval, and
    the 0.0 returned before read as no uncertainty."""
    from scipy import stats
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()), None
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def pm(mean: float, half: float | None, spec: str = ".3f") -> str:
    """``mean ± half`` formatted with ``spec`` (the half-width without a sign), or the mean alone
    when there is no interval (``half`` None: one value)."""
    return f"{mean:{spec}}" + ("" if half is None else f" ± {half:{spec.lstrip('+')}}")


def verdict(diff: float | None, half: float | None, pairs: int) -> str:
    """``wins`` / ``loses`` when the paired 95% interval of ``diff`` excludes zero, ``ties`` otherwise
    ("-" for fewer than two pairs or a difference that is not a number: no interval). Pairs that all
    differ alike (accuracies are multiples of 1 / test rows) give a t-interval of width 0, no evidence
    of its own: there the two-sided sign test decides (``scipy.stats.binomtest``; 6 pairs or more).
    Accuracies on one test set differ by multiples of 1 / its rows, so their spread is 0 or at least
    that: no interval of a hair's width lies between the two rules."""
    if diff is None or half is None or pairs < 2 or not np.isfinite(diff) or not np.isfinite(half):
        return "-"
    if half < 1e-12 and diff != 0:  # (equal differences of float accuracies can leave a spread of ~1e-17)
        from scipy import stats
        if stats.binomtest(pairs, pairs).pvalue >= 0.05:
            return "ties"
    return "wins" if diff - half > 0 else "loses" if diff + half < 0 else "ties"


def _overhead(method: str, variant: str, timings: dict) -> float:
    """Seconds of the shared selection pipeline a method pays: none for random and full data,
    embed + cluster for the cluster-based baselines, embed + cluster + proxy for searches, plus
    cleanlab's flagging (``cleanlab_seconds_V``) for the cleanlab baseline and, with a ``[select]
    filter``, for the searches and the validated choice (``filter_seconds_V``)."""
    if method in ("random", "full"):
        return 0.0
    shared = timings.get("embed_seconds", 0.0) + timings.get("cluster_seconds", 0.0)
    if method in ("stratified", "typical"):
        return shared
    flags = f"cleanlab_seconds_{variant}" if method == "cleanlab" else f"filter_seconds_{variant}"
    return shared + timings.get(f"proxy_seconds_{variant}", 0.0) + timings.get(flags, 0.0)


def validated(rows: list[dict]) -> list[dict]:
    """Derived rows of the validation-checked choice, method ``validated``: in every (variant,
    budget, seed) holding ``stratified`` and every search of that (variant, budget) with its
    validation accuracy, the candidate (each search and ``stratified``) whose finetuned model scores
    the highest validation accuracy (a tie goes to ``stratified``, then to the first in ``ORDER``).
    The row carries that candidate's test scores, steps and label counts, ``picked`` (its method),
    and the cost of every candidate (their selection and finetune seconds summed). No test label
    decides; but the validation rows that decide also early-stopped every finetune and, unless the
    proxy's ``val_size`` caps them, are among the rows the searches maximised."""
    from jaxsel.config import SEARCH_METHODS
    cells: dict = {}
    for r in rows:
        if r["budget"] is not None and r["method"] in SEARCH_METHODS + ("stratified",):
            cells.setdefault((r["variant"], r["budget"], r["seed"]), []).append(r)
    methods: dict = {}  # every candidate method of a (variant, budget): a cell missing one is not a full check
    for (v, b, _), cands in cells.items():
        methods.setdefault((v, b), set()).update(r["method"] for r in cands)
    out = []
    for (v, b, _), cands in cells.items():
        if ({r["method"] for r in cands} != methods[(v, b)] or len(cands) < 2 or "stratified" not in methods[(v, b)]
                or any(r.get("validation_accuracy") is None for r in cands)):
            continue
        best = max(sorted(cands, key=lambda r: ORDER.index(r["method"])),
                   key=lambda r: (r["validation_accuracy"], r["method"] == "stratified"))
        out.append(dict(best, method="validated", picked=best["method"],
                        selection_seconds=sum(r["selection_seconds"] for r in cands),
                        finetune_seconds=sum(r["finetune_seconds"] for r in cands)))
    return out


def summarize(rows: list[dict], timings: dict) -> list[dict]:
    """One entry per (variant, method, budget): seeds, accuracy mean and CI, macro-F1, wall-clock,
    and the accuracy difference to random, stratified, cleanlab (same budget) and full data (same
    variant), each paired by seed (``vs_random``, ``vs_stratified``, ``vs_cleanlab``, ``vs_full``
    with ``*_ci95`` half-widths and ``*_pairs``, the seeds both have), the :func:`verdict` against
    stratified, and ``subsets``: how many distinct subsets the seeds chose (rows that record their
    ``subset_digest``; a deterministic search given the clustering chooses one, whose interval then
    measures the finetunes' and the baseline's seed-to-seed spread, not the selection's). Includes
    the :func:`validated` rows (with ``picked``: how often each candidate was chosen)."""
    rows = list(rows) + validated(rows)
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["variant"], r["method"], r["budget"]), []).append(r)
    full_secs = {v: np.mean([r["finetune_seconds"] for r in rs]) for (v, m, _), rs in groups.items() if m == "full"}
    refs = {m: {(r["variant"], r["budget"], r["seed"]): r["test_accuracy"] for r in rows if r["method"] == m}
            for m in REFERENCES}
    full = {(r["variant"], r["seed"]): r["test_accuracy"] for r in rows if r["method"] == "full"}
    out = []
    for (v, m, b), rs in groups.items():
        acc, ci = mean_ci([r["test_accuracy"] for r in rs])
        total = [_overhead(m, v, timings) + r["selection_seconds"] + r["finetune_seconds"] for r in rs]
        s = {"variant": v, "method": m, "budget": b, "seeds": sorted(r["seed"] for r in rs),
             "test_accuracy": acc, "test_accuracy_ci95": ci,
             "test_macro_f1": float(np.mean([r["test_macro_f1"] for r in rs])),
             "examples": float(np.mean([r["examples"] for r in rs])),
             "steps": _mean_of(rs, "steps"), "examples_seen": _mean_of(rs, "examples_seen"),
             "selection_seconds": float(np.mean([r["selection_seconds"] for r in rs])),
             "finetune_seconds": float(np.mean([r["finetune_seconds"] for r in rs])),
             "total_seconds": float(np.mean(total)),
             "total_vs_full": float(np.mean(total) / full_secs[v]) if v in full_secs else None,
             "corrupted_chosen": float(np.mean([r["corrupted_chosen"] for r in rs]))}
        if all("flipped_chosen" in r for r in rs):  # rows of runs before 2026-12-02 have only the total
            s.update(flipped_chosen=float(np.mean([r["flipped_chosen"] for r in rs])),
                     duplicates_chosen=float(np.mean([r["duplicates_chosen"] for r in rs])))
        if m == "validated":
            s["picked"] = {p: sum(r["picked"] == p for r in rs) for p in ORDER if any(r["picked"] == p for r in rs)}
        if m != "full" and all(r.get("subset_digest") for r in rs):  # recorded since 2026-12-06
            s["subsets"] = len({r["subset_digest"] for r in rs})
        s.update(_label_mix(rs))
        for ref, acc_of in refs.items():
            paired = [r["test_accuracy"] - acc_of[(v, b, r["seed"])] for r in rs if (v, b, r["seed"]) in acc_of]
            if m not in (ref, "full") and paired:
                s[f"vs_{ref}"], s[f"vs_{ref}_ci95"] = mean_ci(paired)
                s[f"vs_{ref}_pairs"] = len(paired)
        paired = [r["test_accuracy"] - full[(v, r["seed"])] for r in rs if (v, r["seed"]) in full]
        if m != "full" and paired:
            s["vs_full"], s["vs_full_ci95"] = mean_ci(paired)
            s["vs_full_pairs"] = len(paired)
        if "vs_stratified" in s:
            s["verdict"] = verdict(s["vs_stratified"], s["vs_stratified_ci95"], s["vs_stratified_pairs"])
        out.append(s)
    key = lambda s: (s["variant"], s["budget"] is None, s["budget"] or 0, ORDER.index(s["method"]))
    return sorted(out, key=key)


PART_KEYS = {"config": dict, "dataset": dict, "rows": list, "complete": bool, "timings": dict, "environment": dict,
             "run_seconds": (int, float)}  # what merge reads of each part


def merge(docs: list[dict]) -> dict:
    """One results document from several runs of the same config split by seed (each part ran
    some of the seeds, e.g. on different machines or sessions, or a stopped run and the rest):
    the rows of all parts in seed order and the summary recomputed over them. The shared stages'
    ``timings`` and the ``environment`` are those of the part holding the lowest seed; ``parts``
    records each part's seeds, environment and wall-clock; ``run_seconds`` is their sum;
    ``complete`` says every seed of the parts' configs has the cells of a complete part.

    Raises JaxselError (a ``ValueError``) when the parts' configs differ in anything but ``seeds`` and ``stages``
    (where the stage cache lives; fields added later that hold their defaults, ``[noise]`` without the
    noisy variant and ``rl_steps`` without an RL agent are no difference),
    or their RL agents' settings (:func:`recorded_agents`: a part written before they were
    recorded ran its tables over the defaults of then) differ, their datasets differ, or two of
    them hold the same (variant, method, budget, seed) cell; the message names what differs."""
    if not docs:
        raise JaxselError("nothing to merge")
    for i, d in enumerate(docs):
        if not (isinstance(d, dict) and all(isinstance(d.get(k), t) for k, t in PART_KEYS.items())):
            raise JaxselError(f"part {i + 1} is not a run's results document (a results.json with "
                              f"{', '.join(PART_KEYS)})")
    docs = sorted(docs, key=lambda d: min((r["seed"] for r in d["rows"]), default=float("inf")))
    first = docs[0]
    from jaxsel.config import RunConfig, describe_differences, recorded_settings

    by_content = all("fingerprint" in d["dataset"] for d in docs)  # compared below: a path may differ by machine

    def settings(d: dict) -> dict:  # what ran: settings nothing read are no difference
        cfg = recorded_settings(d["config"])
        if by_content:
            cfg["data"] = {k: v for k, v in cfg["data"].items() if k != "name"}
        if "noisy" not in cfg.get("variants", RunConfig.variants):  # [noise] is read by the noisy variant alone
            cfg["noise"] = {}
        # the agents' tables and rl_steps are compared as the agents ran them (their total_timesteps)
        select = {k: v for k, v in (cfg.get("select") or {}).items() if k not in (*AGENTS, "rl_steps")}
        return {**{k: v for k, v in cfg.items() if k not in ("seeds", "stages")}, "select": select,
                "agents": recorded_agents(d), "revisions": d.get("revisions", {})}
    ref = settings(first)
    for d in docs[1:]:
        cfg = settings(d)
        if cfg != ref:
            seeds = lambda doc: sorted({r["seed"] for r in doc["rows"]})  # noqa: E731
            said = describe_differences(ref, cfg, (f"in the part of seeds {seeds(first)}", f"in that of {seeds(d)}"))
            raise JaxselError(f"the parts ran different configs (they differ in {said})")
        mine, theirs = first["dataset"], d["dataset"]  # the keys both record: a newer jaxsel's summary adds some
        if any(mine[k] != theirs[k] for k in mine.keys() & theirs.keys()):
            raise JaxselError("the parts ran on different datasets")
    rows, per_seed = [], {}
    for d in docs:
        for r in d["rows"]:
            cells = per_seed.setdefault(r["seed"], set())
            cell = (r["variant"], r["method"], r["budget"])
            if cell in cells:
                raise JaxselError(f"two parts hold the cell {cell + (r['seed'],)}")
            cells.add(cell)
            rows.append(r)
    rows.sort(key=lambda r: r["seed"])  # stable: each seed's cells keep their run order
    seeds = sorted({s for d in docs for s in d["config"]["seeds"]})
    whole = next((per_seed[d["rows"][0]["seed"]] for d in docs if d["complete"] and d["rows"]), None)  # a seed's cells
    complete = whole is not None and all(per_seed.get(s) == whole for s in seeds)
    parts = [p for d in docs for p in d.get("parts") or [{"seeds": sorted({r["seed"] for r in d["rows"]}),
                                                           "environment": d["environment"],
                                                           "run_seconds": d["run_seconds"]}]]
    return {"config": dict(first["config"], seeds=seeds), "agents": recorded_agents(first),
            **({"revisions": first["revisions"]} if first.get("revisions") else {}),
            "dataset": first["dataset"], "timings": first["timings"],
            "rows": rows, "environment": first["environment"], "run_seconds": sum(p["run_seconds"] for p in parts),
            "complete": complete, "parts": parts, "summary": summarize(rows, first["timings"])}


def _mean_of(rs: list[dict], key: str) -> float | None:
    """Mean of ``key`` over rows that have it (older results may not), else None."""
    values = [r[key] for r in rs if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _label_mix(rs: list[dict]) -> dict:
    """Label shares of a group's selections (summed over seeds) and of its train split, and the
    classes with a train example that some seed's selection left out."""
    if not all("label_counts" in r for r in rs):
        return {}
    counts = np.sum([r["label_counts"] for r in rs], 0)
    out = {"label_share": (counts / max(counts.sum(), 1)).tolist()}
    if all("train_label_counts" in r for r in rs):
        train = np.asarray(rs[0]["train_label_counts"])
        out["train_label_share"] = (train / max(train.sum(), 1)).tolist()
        out["missing_classes"] = sorted({c for r in rs for c in np.flatnonzero((np.asarray(r["label_counts"]) == 0)
                                                                                  & (train > 0)).tolist()})
    return out


def _count(mean: float) -> str:
    """A count's mean over seeds: whole numbers as such, else one decimal (15.5 corrupted of 4.5 flipped and
    11.0 copies printed 16 of 4 and 11, against the column's "counts in both")."""
    return f"{mean:.0f}" if float(mean).is_integer() else f"{mean:.1f}"


def _interval(mean: float, half: float | None, seeds: int, sign: str = "") -> str:
    """``mean ± half``, or the mean alone for one seed or pairing (no interval to show)."""
    return pm(mean, half if seeds > 1 else None, f"{sign}.3f")


def _paired(s: dict, ref: str, seeds: int) -> str:
    """The ``vs ref`` cell: mean ± half-width over the pairs ("-" without any), with their count
    when fewer seeds paired than the row has (a baseline missing some seeds)."""
    if f"vs_{ref}" not in s:
        return "-"
    pairs = s.get(f"vs_{ref}_pairs", seeds)
    return _interval(s[f"vs_{ref}"], s[f"vs_{ref}_ci95"], pairs, "+") + (f" ({pairs} pairs)" if pairs < seeds else "")


def method_label(s: dict) -> str:
    """A summary entry's method, with how often each candidate was picked for ``validated``."""
    picked = s.get("picked")
    return s["method"] + (" (" + ", ".join(f"{p} {c}" for p, c in picked.items()) + ")" if picked else "")


def percent(budget: float) -> str:
    """A budget as the table prints it: "5%", "6.25%", and budgets under 0.005% by their first
    digits ("1e-05%"; a budget of 1e-9 of the rows was printed "0%")."""
    text = f"{budget:.2%}".replace(".00%", "%")
    return text if budget >= 5e-5 else f"{100 * budget:.2g}%"


def markdown(summary: list[dict], labels: list[str] | None = None) -> str:
    """The results table (the corrupted-examples column appears when a noisy variant is present),
    then a note for every selection that left out a class (the run warned of it). ``labels``: class names."""
    noisy = any(s["variant"] == "noisy" for s in summary)
    mix = any("label_share" in s for s in summary)
    refs = [ref for ref in REFERENCES if any(f"vs_{ref}" in s for s in summary)] + (
        ["full"] if any("vs_full" in s for s in summary) else [])
    verdicts = any("verdict" in s for s in summary)
    head = (["variant", "method", "budget", "seeds", "test acc (95% CI)"] + [f"vs {ref}, paired" for ref in refs]
            + (["verdict vs stratified"] if verdicts else []) + ["macro-F1", "examples", "steps", "examples seen"]
            + (["label mix %"] if mix else []) + ["selection s", "finetune s", "total s", "total / full"]
            + (["corrupted chosen (flipped, copies: a copy of a flipped row counts in both)"] if noisy else []))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []  # classes a method left out
    for s in summary:
        n = len(s["seeds"])
        budget = "all" if s["budget"] is None else percent(s["budget"])
        subsets = s.get("subsets", n)
        seeds = str(n) + (f" ({subsets} subset{'s' * (subsets > 1)})" if subsets < n else "")
        cells = [s["variant"], method_label(s), budget, seeds, _interval(s["test_accuracy"], s["test_accuracy_ci95"], n)]
        cells += [_paired(s, ref, n) for ref in refs] + ([s.get("verdict", "-")] if verdicts else [])
        cells += [f"{s['test_macro_f1']:.3f}", _count(s["examples"])]
        cells += ["-" if s.get(k) is None else _count(s[k]) for k in ("steps", "examples_seen")]
        if mix:
            cells.append("/".join(f"{100 * v:.0f}" for v in s["label_share"]) if "label_share" in s else "-")
        cells += [f"{s['selection_seconds']:.1f}", f"{s['finetune_seconds']:.1f}", f"{s['total_seconds']:.1f}",
                  "-" if s["total_vs_full"] is None else f"{s['total_vs_full']:.2f}"]
        if noisy:
            cells.append("-" if s["variant"] != "noisy" else _count(s["corrupted_chosen"]) + (
                f" ({_count(s['flipped_chosen'])} flipped, {_count(s['duplicates_chosen'])} copies)"
                if "flipped_chosen" in s else ""))
        lines.append("| " + " | ".join(cells) + " |")
        if s.get("missing_classes"):
            train = "/".join(f"{100 * v:.0f}" for v in s["train_label_share"])
            gone = class_list(s["missing_classes"], labels or [str(c) for c in range(len(s["train_label_share"]))])
            notes.append(f"missing classes: {s['variant']} {s['method']} {budget} selected no example of {gone} in at "
                         f"least one seed (label mix % {'/'.join(f'{100 * v:.0f}' for v in s['label_share'])}; "
                         f"train {train})")
    return "\n".join(lines + ([""] + notes if notes else []))


def _class_order(labels: list[str] | None) -> str:
    """", in class order a/b/c" for the label mix column (empty without class names)."""
    return f", in class order {'/'.join(labels)}" if labels else ""


def _panels(n: int, width: float, height: float):
    """(figure, row of n axes): a ``matplotlib.figure.Figure`` (no pyplot, no global backend)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * n, height), layout="constrained")
    return fig, fig.subplots(1, n, squeeze=False)[0]


def _save(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")


def plot_accuracy(summary: list[dict], path: Path) -> None:
    """Test accuracy vs budget per method (error bars: 95% CI, drawn within [0, 1]), one panel per variant; full data
    as a horizontal band. Methods are dodged sideways (by up to +-3% of the budget) so their
    intervals do not hide each other."""
    variants = sorted({s["variant"] for s in summary})
    fig, axes = _panels(len(variants), 5.5, 4)
    for ax, v in zip(axes, variants):
        for i, m in enumerate(ORDER):
            ss = sorted((s for s in summary if s["variant"] == v and s["method"] == m and s["budget"] is not None),
                        key=lambda s: s["budget"])
            if ss:
                dodge = 1 + 0.06 * (i / max(len(ORDER) - 1, 1) - 0.5)
                acc = np.array([s["test_accuracy"] for s in ss])
                half = np.array([s["test_accuracy_ci95"] or 0.0 for s in ss])
                ax.errorbar([s["budget"] * 100 * dodge for s in ss], acc,  # bars cut at 0 and 1 (few seeds: wide t)
                            yerr=[np.minimum(half, acc), np.minimum(half, 1 - acc)], marker="o", capsize=3, label=m,
                            color=f"C{i % 10}")  # a method keeps its colour across figures
        for s in summary:
            if s["variant"] == v and s["method"] == "full":
                ax.axhline(s["test_accuracy"], color="k", ls="--", label="full data")
                half = s["test_accuracy_ci95"] or 0.0
                ax.axhspan(max(s["test_accuracy"] - half, 0.0), min(s["test_accuracy"] + half, 1.0),
                           color="k", alpha=0.08)
        ax.set(title=f"{v} data", xlabel="budget (% of train)", ylabel="test accuracy")
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_wallclock(summary: list[dict], timings: dict, path: Path) -> None:
    """Stacked seconds per method at the first budget: embed + cluster + proxy, selection, finetune."""
    variants = sorted({s["variant"] for s in summary})
    fig, axes = _panels(len(variants), 5.5, 4)
    for ax, v in zip(axes, variants):
        budgets = sorted({s["budget"] for s in summary if s["variant"] == v and s["budget"] is not None})
        ss = [s for s in summary if s["variant"] == v and (s["budget"] is None or (budgets and s["budget"] == budgets[0]))]
        names = [s["method"] for s in ss]
        parts = [("embed + cluster + proxy (+ flagging)", [_overhead(s["method"], v, timings) for s in ss]),
                 ("selection", [s["selection_seconds"] for s in ss]),
                 ("finetune", [s["finetune_seconds"] for s in ss])]
        bottom = np.zeros(len(ss))
        for label, vals in parts:
            ax.bar(names, vals, bottom=bottom, label=label)
            bottom += np.asarray(vals)
        ax.set(title=f"{v} data, budget {percent(budgets[0])}" if budgets else v, ylabel="seconds")
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_mask_map(maps: dict, path: Path) -> None:
    """2-D PCA of explored cluster masks coloured by proxy score; each search method's pick marked."""
    fig, axes = _panels(len(maps), 6.5, 4.5)
    for ax, (v, mp) in zip(axes, sorted(maps.items())):
        x = mp["masks"].astype(np.float64)
        x = x - x.mean(0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        xy = x @ vt[:2].T
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))  # one cluster (or one mask): a single component
        kinds, scores = np.array(mp["kinds"]), np.asarray(mp["scores"])
        norm = dict(cmap="viridis", vmin=scores.min(), vmax=scores.max())
        sampled = kinds == "sampled"
        sc = ax.scatter(xy[sampled, 0], xy[sampled, 1], c=scores[sampled], s=10, label="random budget-sized", **norm)
        for i, m in enumerate(m for m in ORDER if (kinds == f"{m} explored").any()):  # each search's logged subsets
            hit = kinds == f"{m} explored"
            ax.scatter(xy[hit, 0], xy[hit, 1], c=scores[hit], s=14, marker="x+1"[i % 3], label=f"{m} explored", **norm)
        for i, m in enumerate(m for m in ORDER if (kinds == m).any()):
            hit = kinds == m
            ax.scatter(xy[hit, 0], xy[hit, 1], marker="*P^sD"[i % 5], s=200, edgecolor="k", c=scores[hit],
                       label=f"{m} pick", **norm)
        fig.colorbar(sc, ax=ax, label="proxy validation accuracy")
        ax.set(title=f"{v} data: subsets (PCA of cluster masks)", xlabel="PC 1", ylabel="PC 2")
        ax.legend(fontsize=7, loc="best")
    _save(fig, path)


def agent_settings(cfg) -> dict:
    """The settings each RL agent of a :class:`jaxsel.config.RunConfig` runs with (all fields of its
    PPOConfig/DQNConfig, by method; ``total_timesteps`` as asked: training runs whole updates,
    :func:`jaxsel.agents.env_steps`, the count report.md states): what results documents record as
    ``agents``, so a document says which network and steps ran whatever the defaults of the jaxsel
    that reads it."""
    from jaxsel.agents import agent_config
    return {m: dataclasses.asdict(agent_config(m, cfg.select.rl_steps, getattr(cfg.select, m)))
            for m in AGENTS if m in cfg.methods}


def revisions(cfg) -> dict:
    """``{"revisions": {method: revision}}`` for the methods of a :class:`jaxsel.config.RunConfig`
    whose algorithm is past its first revision (:func:`jaxsel.agents.revision`), else ``{}``: what a
    results document records, so parts computed before and after an algorithm changed never merge."""
    from jaxsel.agents import cell_config, revised
    parts = {m: revised(cell_config(cfg.select, m, cfg.budgets[0], 0).used()) for m in cfg.methods}
    past = {m: part["revision"] for m, part in parts.items() if part}
    return {"revisions": past} if past else {}


def recorded_agents(doc: dict) -> dict:
    """The settings a results document's RL agents ran with (as :func:`agent_settings`): its
    ``agents``, with the fields added since at the values that ran before they existed (their
    keyless values: PPO's value clipped, until 2026-12-06), or for a document written before those
    were recorded (2026-12-05), its config's tables over the defaults of then (the early network)."""
    from jaxsel.agents import CONFIGS, agent_config
    from jaxsel.config import SelectSpec, as_ran
    if "agents" in doc:
        return {m: as_ran(CONFIGS[m], settings) for m, settings in doc["agents"].items()}
    cfg = doc["config"]
    sel = cfg.get("select", {})
    return {m: dataclasses.asdict(agent_config(m, sel.get("rl_steps", SelectSpec().rl_steps),
                                               as_ran(CONFIGS[m], sel.get(m) or {})))
            for m in AGENTS if m in cfg["methods"]}


def _agents(doc: dict) -> str:
    """A sentence on the RL agents of a results document (:func:`recorded_agents`): the environment
    steps they ran (whole updates: rl_steps rounded down, :func:`jaxsel.agents.env_steps`), network,
    preferences and PPO's value clipping."""
    from jaxsel.agents import agent_config, env_steps
    recorded = recorded_agents(doc)

    def agent(m: str) -> str:
        c = agent_config(m, recorded[m]["total_timesteps"], recorded[m])
        rate = c.preference_rate
        return (f"{m.upper()} {env_steps(c, c.num_updates):,} environment steps, {c.network} network"
                f"{f', per-cluster preferences at {rate:g}x its learning rate' if rate else ''}"
                f"{', value clipped' if getattr(c, 'clip_value', False) else ''}")

    parts = [agent(m) for m in AGENTS if m in recorded]
    return f" {'; '.join(parts)} (`jaxsel.agents.networks`)." if parts else ""


def write(out: Path, doc: dict, maps: dict) -> None:
    """``report.md`` and the PNG plots in ``out`` (the mask map only from ``maps``; an earlier one is kept)."""
    out = Path(out)
    table = markdown(doc["summary"], doc.get("dataset", {}).get("labels"))
    cfg = doc["config"]
    env = doc["environment"]
    paired = [f"`vs {b}`" for b in REFERENCES if b in cfg["methods"]]
    text = (f"# jaxsel run `{cfg['name']}` on {cfg['data']['name']}\n\n"
            f"{env['date']}, {env['device']} x{env['device_count']} ({env['backend']}), {env['cpu_count']} CPUs, "
            f"jax {env['versions'].get('jax', '?')}; run wall-clock {doc['run_seconds']:.0f} s "
            f"(stages reused from earlier runs count as their recorded time).\n\n"
            f"Test accuracy: mean over seeds ± half-width of the 95% Student-t interval"
            + (f"; {' and '.join(paired)}: mean and 95% interval of (method - that baseline's subset of the same "
               f"size) over seeds, paired by seed" if paired else "")
            + ("; `verdict vs stratified`: wins or loses when that paired interval excludes zero (pairs that all "
               "differ alike: when the two-sided sign test does, from 6 pairs), else ties"
               if "stratified" in cfg["methods"] else "")
            + ". With few seeds a t-interval is wide and can reach past 0 or 1. `seeds` says `(1 subset)` where every "
              "seed chose the same examples (a search is deterministic given the clustering, whose seed is fixed): "
              "its interval is then the finetunes' and the baselines' seed-to-seed spread, not the selection's"
            + f". `total s` adds the shared embed + cluster + proxy time, and cleanlab's flagging where a row uses it "
            f"({', '.join(f'{k} {v:.1f}' for k, v in doc['timings'].items())}), to selection and finetuning; "
            f"`total / full` divides it by the full-data finetune. The first finetune and proxy of each shape in a "
            f"process include their XLA compilation (seconds; `$JAXSEL_CACHE/xla` keeps it for later runs), which "
            f"weighs on small runs' ratios. `label mix %`: "
            f"the selections' label shares over all seeds (full data: the train split's)"
            f"{_class_order(doc.get('dataset', {}).get('labels'))}.{_agents(doc)}\n\n"
            f"{table}\n\n![accuracy](accuracy_vs_budget.png)\n![wall-clock](wallclock.png)\n")
    plot_accuracy(doc["summary"], out / "accuracy_vs_budget.png")
    plot_wallclock(doc["summary"], doc["timings"], out / "wallclock.png")
    if maps:
        plot_mask_map(maps, out / "mask_map.png")
    if (out / "mask_map.png").exists():  # drawn now, or kept from the part holding the first seed
        text += "![explored masks](mask_map.png)\n"
    write_utf8(out / "report.md", text)
