"""``jaxsel run``: the whole comparison from one config file.

data -> embed -> cluster -> (per variant: clean, noisy) proxy -> select with every method and
budget -> finetune the target on each selection, on random subsets of the same size and on the
full train split, for every seed -> ``results.json`` + report (see :mod:`jaxsel.experiment.report`).

Every stage writes its result atomically into ``RUN/stages/`` under a name that carries a hash of
its inputs, so a second run reuses finished stages, a changed config recomputes only what changed,
and an interrupted run resumes (RL and CLIMB from their checkpoints, long finetunes from their
last epoch). Selection sees the train and validation splits only; the test split is read by the
finetuner's final evaluation alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from jaxsel import allocator, baselines, metrics, progress as progress_
from jaxsel.experiment import stages
from jaxsel.checkpoint import CheckpointMismatch, Stopwatch, recorded_seconds
from jaxsel.config import DataSpec, RunConfig, build, config_file, load_config, spelling
from jaxsel.data import column, dataset_fingerprint, source_name
from jaxsel.errors import JaxselError, JaxselWarning, counted, warn
from jaxsel.io import (computed_once, exclusive, options_tag, read_cached, read_json, remove_stale_temporaries, short_name,
                       write_json)
from jaxsel.precision import in_32_bits
from jaxsel.selection import budget_examples, check_budgets, digest, missing_classes, no_example_of

log = logging.getLogger(__name__)


def resumed(work, clock: Stopwatch | None = None):
    """``work(True)``, a stage resuming its checkpoints; when they cannot be resumed
    (:class:`~jaxsel.checkpoint.CheckpointMismatch`), a warning and ``work(False)``, the stage
    afresh (``clock``, timing it, restarted). A stage's folder is keyed by its inputs, so only
    another jaxsel can have written them, and ``jaxsel run`` has no --resume to drop: a run that an
    older jaxsel left in a finetune stopped with one line, at every rerun."""
    try:
        return work(True)
    except CheckpointMismatch as e:
        warn(f"{e.reason}: this stage starts afresh")
        if clock is not None:
            clock.restart()
        return work(False)


MIN_STEPS_PER_CLASS = 5  # a budget's finetunes planning fewer optimizer steps per class get a warning


def load_dataset(spec: DataSpec):
    """The dataset a run reads (``DatasetDict``): ``spec``'s file or name, split and read as it says,
    then cut to its stratified caps. Raises JaxselError as :func:`jaxsel.data.load` does."""
    from jaxsel import data, proxy
    d = spec
    dd = data.load(d.name, text_col=d.text_col, label_col=d.label_col, split_col=d.split_col, encoding=d.encoding,
                   missing_labels=d.missing_labels, merge_case=d.merge_case, min_class_rows=d.min_class_rows,
                   seed=d.split_seed, dedup=d.dedup)
    caps = {"train": d.max_train, "validation": d.max_validation, "test": d.max_test}
    if any(caps.values()):
        labels = {s: np.asarray(column(dd[s], "label")) for s in caps}
        for s, n in caps.items():
            if n is not None and n < (classes := len(np.unique(labels[s]))):
                raise JaxselError(f"[data] max_{s} = {n} leaves classes without {s} rows: the split has {classes} "
                                  f"classes, and each class needs rows in train, validation and test")
            if n is not None and n > len(labels[s]):
                warn(f"[data] max_{s} = {n} exceeds the {len(labels[s])} {s} rows: all are used", once=True)
        rows = {s: proxy.stratified_subsample(labels[s], n, d.seed) for s, n in caps.items()}
        dd = data.derive(dd, rows, tag=f"caps={caps};seed={d.seed}")
    return dd


def data_record(spec: DataSpec) -> dict:
    """How a run read its dataset, for its selections to record (``jaxsel export`` and ``jaxsel
    finetune --selection`` rebuild the dataset from it): the dataset (a file as an absolute path)
    and the whole ``[data]`` table."""
    name = source_name(spec.name)
    return {"dataset": name, "data_spec": dataclasses.asdict(dataclasses.replace(spec, name=name))}


class Run:
    """One run folder: stage files under ``stages/``, ``results.json`` and the report at the top."""

    def __init__(self, cfg: RunConfig, out: Path, progress: bool = True, source: str | None = None,
                 where: str | None = None):
        """``source``: the config file's absolute path (recorded); ``where``: as given, for errors."""
        self.cfg, self.out, self.progress, self.source, self.where = cfg, Path(out), progress, source, where
        self.stage_dir = Path(cfg.stages).expanduser() if cfg.stages else self.out / "stages"  # "~/x": a home's
        remove_stale_temporaries(self.out)  # what a killed run left
        if cfg.stages:  # a stage folder other runs may be writing to now: only what no write takes that long
            remove_stale_temporaries(self.stage_dir, min_age=600)
        self.timings: dict = {}
        self.search_logs: dict = {}
        self.finetunes_reused = 0  # finetunes whose metrics the stage folder already held
        self.selections_reused = 0  # selections the stage folder already held
        self.selections_made: list[str] = []  # the others, "variant method budget seed N", in the order made

    # -- shared stages ---------------------------------------------------------------------

    def dataset(self):
        from jaxsel import data
        dd = load_dataset(self.cfg.data)
        if self.progress:
            data.warn_summary(dd)
        return dd

    def embeddings(self, dd) -> dict[str, np.ndarray]:
        from jaxsel import data, embed
        spec = self.cfg.embed
        rec = self.stage_dir / f"embed-{stages.key('embedding', data.dataset_fingerprint(dd), spec)}.json"
        t = time.perf_counter()
        emb = embed.embed_dataset(dd, spec.model, max_length=spec.max_length, dtype=spec.dtype, progress=self.progress,
                                  splits=data.SELECTION_SPLITS)
        kept = recorded_seconds(rec)
        if kept is None:  # a fresh run folder: from the global cache, what embedding took when it was computed
            cached = embed.embedding_seconds(dd, spec.model, max_length=spec.max_length, dtype=spec.dtype,
                                             splits=data.SELECTION_SPLITS)
            kept = max(time.perf_counter() - t, cached or 0.0)
            write_json(rec, {"seconds": kept})
        self.timings["embed_seconds"] = kept
        return emb

    def clustering(self, dd, emb):
        from jaxsel import data
        labels = np.asarray(column(dd["train"], "label"))
        c = stages.clustering(self.stage_dir, data.dataset_fingerprint(dd), emb["train"], self.cfg.cluster,
                              self.cfg.embed, labels, self.progress)
        self.timings["cluster_seconds"] = c.meta["seconds"]
        return c

    def variant(self, name: str, dd, emb, clean):
        """(dataset, train embeddings, clustering, flags) of one variant; flags: (2, N) bool, the rows
        whose label was changed and the appended copies (all False for the clean variant)."""
        from jaxsel import cluster, data
        from jaxsel.data import noise
        if name == "clean":
            return dd, emb["train"], clean, np.zeros((2, len(dd["train"])), bool)
        n = self.cfg.noise
        labels = np.asarray(column(dd["train"], "label"))
        texts = column(dd["train"], "text") if n.near_duplicates else None
        groups = clean.assignment
        if n.groups == "independent":  # another seed than the run's clustering, always
            groups = cluster.kmeans(emb["train"], clean.k, seed=int(clean.meta["seed"]) + 1 + n.seed).assignment
        corr = noise.corrupt(labels, groups, dd["train"].features["label"].num_classes,
                             flip_fraction=n.flip_fraction, duplicate_fraction=n.duplicate_fraction,
                             copies=n.copies, seed=n.seed, kind=n.kind, rate_range=(n.rate_low, n.rate_high),
                             near_duplicates=n.near_duplicates, x=emb["train"] if n.kind == "instance" else None,
                             texts=texts)
        k, x = clean.k, emb["train"][corr.source]
        assignment = np.asarray(clean.assignment)[corr.source]  # each row keeps its own cluster
        new_texts = None
        if corr.copy_texts is not None:  # near duplicates: their own texts and embeddings
            new_texts = texts + corr.copy_texts
            x[len(labels):] = stages.texts_embedded(self.stage_dir, corr.copy_texts, self.cfg.embed, self.progress)
        noisy = data.derive(dd, {"train": corr.source}, train_labels=corr.labels, train_texts=new_texts,
                            tag=f"noise={spelling(n)}")
        c = cluster.Clustering(assignment.astype(np.int32), clean.centroids,
                               np.bincount(assignment, minlength=k).astype(np.int32),
                               cluster.index_table(assignment, k, clean.table.shape[1], clean.meta["seed"]),
                               float("nan"), dict(clean.meta, noise=dataclasses.asdict(n)))
        if clean.within is not None:
            c = cluster.typical_order(c, x)
        return noisy, x, c, np.stack([corr.flipped, corr.duplicate])

    def make_proxy(self, dd, train_x, c, emb):
        from jaxsel import proxy
        t = time.perf_counter()
        p = proxy.make(train_x, np.asarray(column(dd["train"], "label")), c, emb["validation"],
                       np.asarray(column(dd["validation"], "label")), self.cfg.proxy)
        return p, time.perf_counter() - t

    # -- per-cell stages -------------------------------------------------------------------

    def selection(self, variant: str, method: str, budget: float, seed: int, dd, labels: np.ndarray, p, c,
                  train_x: np.ndarray, flagged: np.ndarray | None = None, issues: np.ndarray | None = None):
        """(selection, its file's absolute path) of one (variant, method, budget, seed), computed once
        and kept in its stage folder's ``selection.json`` (baselines' too: ``jaxsel export`` reads any
        of them; a results row names its file as ``selection``). With
        ``flagged`` (N,) bool (``[select] filter`` not "none") it chooses among the other rows;
        ``issues``: the rows the cleanlab baseline leaves out."""
        from jaxsel import agents, data
        from jaxsel.selection import Selection
        spec = self.cfg.select
        cfg = agents.cell_config(spec, method, budget, seed).used()  # [select] applies where it is read: no warning
        fp = data.dataset_fingerprint(dd)
        key = stages.selection_key(fp, self.cfg, cfg, flagged is not None)
        folder = self.stage_dir / f"{variant}-{method}-{stages.budget_tag(budget)}-s{seed}-{key}"
        path = (folder / "selection.json").absolute()
        self.search_logs[(variant, budget, seed, method)] = folder / "checkpoints" / "search.json"
        with computed_once(folder, path, Selection.load) as kept:  # another run sharing the stages may compute it now
            if kept is not None:
                self.selections_reused += 1
                return kept, path
            self.selections_made.append(f"{variant} {method} {stages.budget_tag(budget)} seed {seed}")
            kw = dict(meta={"fingerprint": fp, "variant": variant}, ckpt_dir=folder / "checkpoints",
                      progress=self.progress, train_x=train_x, warn_missing=False)  # the cell's warning says it
            with Stopwatch(folder / "checkpoints" / "seconds.json", resume=True) as clock:  # interrupted attempts too
                if flagged is None:
                    sel = resumed(lambda resume: agents.select(p, c, labels, cfg, issues=issues, resume=resume, **kw),
                                  clock)
                else:
                    sel = resumed(lambda resume: agents.select_unflagged(flagged, p, c, labels, cfg,
                                                                         validation=self.validation, resume=resume, **kw),
                                  clock)
            sel.meta["selection_seconds"] = clock.seconds
            sel.meta.update(data_record(self.cfg.data))
            sel.save(path)
        return sel, path

    def finetune(self, name: str, dd, indices: np.ndarray | None, seed: int) -> dict:
        from jaxsel import data, finetune
        cfg = dataclasses.replace(self.cfg.finetune, seed=seed)
        idx = None if indices is None else np.asarray(indices, np.int64)
        key = stages.key("finetune", data.dataset_fingerprint(dd), cfg,
                         None if idx is None else digest(np.sort(idx)))  # a set of rows, as finetune trains it
        folder = self.stage_dir / f"{name}-{key}"
        path = folder / "metrics.json"
        with computed_once(folder, path, read_json) as kept:  # as a selection's
            if kept is not None:
                self.finetunes_reused += 1
                return kept
            n = len(dd["train"]) if idx is None else len(idx)
            ckpt = folder / "checkpoints" if n >= self.cfg.checkpoint_min_examples else None
            with warnings.catch_warnings():  # execute warned of a subset's missing classes by its cell's name
                warnings.filterwarnings("ignore", finetune.MISSES_CLASSES, JaxselWarning)
                m = resumed(lambda resume: finetune.finetune(dd, idx, cfg, ckpt_dir=ckpt, resume=resume,
                                                             progress=self.progress))
            m["malloc"] = allocator.describe()  # a resumed run reuses this row's timing under another process's setting
            write_json(path, m)
            if ckpt is not None:
                shutil.rmtree(ckpt, ignore_errors=True)
        return m

    @in_32_bits
    def explored(self, budget: float, p, c, sels: dict, logs: list, labels: np.ndarray, seed: int = 0,
                 samples: int = 512) -> dict:
        """Subsets for the map of the search space (the share of each cluster taken): random
        budget-sized picks, the subsets each search logged (``search.json``: CLIMB's, the reward-model
        agents'), and each search method's final pick, with their
        proxy scores (under the run's class caps, when it balances; ``labels``: the train labels)."""
        from jaxsel.agents import reward_model, search
        from jaxsel.proxy import RewardCache
        from jaxsel.selection import balance_caps, quota_for
        rng, examples = np.random.default_rng(seed), budget_examples(budget, len(c.assignment))
        spec = self.cfg.select  # the run's quota, not a selection's record (a baseline's is 0: agents.READS)
        quota = quota_for(spec.granularity, spec.quota, spec.horizon, examples)
        caps = balance_caps(c, labels, examples, spec.balance)
        sizes = np.asarray(c.sizes)
        orders = [search.complete([], sizes, examples, rng, quota, caps) for _ in range(samples)]
        kinds = ["sampled"] * samples
        for (m, sel), searched in zip(sels.items(), logs):
            orders.append(sel.cluster_ids)
            kinds.append(m)
            explored = None if searched is None else read_cached(searched, lambda path: list(read_json(path)["orders"]))
            if explored is not None:
                orders += explored
                kinds += [f"{m} explored"] * len(explored)
        takes = search.takes(orders, sizes, examples, quota, caps)
        partials = 1 if caps is None else len(caps.caps)
        scores = RewardCache(p.with_quota(quota).with_partial_cap(examples).with_partials(partials)).scores(takes)
        return {"masks": reward_model.coverage(takes, sizes), "scores": scores, "kinds": kinds}

    # -- the whole run ---------------------------------------------------------------------

    def cells(self) -> list[tuple]:
        """(seed, variant, budget, method) in the order they run: one seed of everything first, so
        a stopped run already has every cell once."""
        out = []
        for seed in self.cfg.seeds:
            for v in self.cfg.variants:
                if "full" in self.cfg.methods:
                    out.append((seed, v, None, "full"))
                for b in self.cfg.budgets:
                    out += [(seed, v, b, m) for m in self.cfg.methods if m != "full"]
        return out

    def maps(self, selections: dict, variants: dict) -> dict:
        """The mask map of each variant at the first seed and budget (see :meth:`explored`)."""
        maps = {}
        seed, budget = self.cfg.seeds[0], self.cfg.budgets[0]
        for v, (_, labels, c, p, _, _) in variants.items():
            sels = {m: s for (vv, b, sd, m), s in selections.items() if vv == v and b == budget and sd == seed}
            if sels:
                logs = [self.search_logs.get((v, budget, seed, m)) for m in sels]
                maps[v] = self.explored(budget, p, c, sels, logs, labels, seed)
        return maps

    def report(self, dd, rows: list, maps: dict, seconds: float) -> dict:
        """Write ``results.json`` and the report for the rows so far (after every seed)."""
        from jaxsel import data
        from jaxsel.experiment import report
        doc = {"config": dataclasses.asdict(self.cfg), "config_file": self.source,
               "agents": report.agent_settings(self.cfg), **report.revisions(self.cfg),
               "dataset": data.summary(dd), "timings": self.timings,
               "rows": rows, "environment": report.environment(), "run_seconds": seconds,
               "complete": len(rows) == len(self.cells())}
        doc["summary"] = report.summarize(rows, self.timings)
        report.write(self.out, doc, maps)
        write_json(self.out / "results.json", doc)  # last: "complete" only once the report and plots are there
        return doc

    def flagged(self, issues: dict, v: str, p, labels: np.ndarray, c, use: str) -> np.ndarray:
        """(N,) bool: the train rows of variant ``v`` cleanlab flags for ``use``: "cleanlab" (the
        baseline: by rows) or "filter" (the searches' ``[select] filter``), computed once per variant
        and detector (:func:`jaxsel.label_issues.find`); its seconds go to ``timings[USE_seconds_V]``,
        a shared cost of the rows that use the flags."""
        from jaxsel import label_issues
        by, charged = "rows" if use == "cleanlab" else label_issues.FILTER_BY[self.cfg.select.filter], f"{use}_seconds_{v}"
        if (v, by) not in issues:
            t = time.perf_counter()
            issues[v, by] = label_issues.find(p, labels, c.assignment, by=by), time.perf_counter() - t
        flags, self.timings[charged] = issues[v, by]
        return flags

    def check_unflagged(self, variants: dict, issues: dict) -> None:
        """Before the first cell: the rows cleanlab leaves hold the largest budget, for its baseline
        and for filtered searches, or JaxselError (a run too tight for one of them stopped at that
        method's first cell, after the finetunes of the cells before it)."""
        from jaxsel.agents import check_kept
        searches = [m for m in self.cfg.methods if m != "full" and m not in baselines.METHODS]
        for v, (_, labels, c, p, _, _) in variants.items():
            examples = budget_examples(max(self.cfg.budgets), len(labels))
            try:
                if "cleanlab" in self.cfg.methods:
                    flagged = self.flagged(issues, v, p, labels, c, "cleanlab")
                    baselines.check_unflagged(int((~flagged).sum()), examples)
                if searches and self.cfg.select.filter != "none":
                    flagged = self.flagged(issues, v, p, labels, c, "filter")
                    check_kept(int((~flagged).sum()), len(labels), examples)
            except JaxselError as e:  # which variant: the noisy one has more rows
                raise JaxselError(f"{v} variant, budget {max(self.cfg.budgets):.10g}: {e}") from None

    def cell(self, seed: int, v: str, budget: float | None, method: str, variant: tuple, selections: dict,
             issues: dict) -> dict:
        """One row of the results: select (or take a baseline subset), finetune, measure."""
        vdd, labels, c, p, flags, train_x = variant
        n = len(labels)
        row = {"variant": v, "method": method, "budget": budget, "seed": seed, "selection_seconds": 0.0,
               "proxy_accuracy": None}
        if method == "full":
            indices = None
        elif method in baselines.METHODS:  # its seconds stay 0: writing its selection is bookkeeping, not the method
            sel, path = self.selection(v, method, budget, seed, vdd, labels, p, c, train_x, issues=self.flagged(
                issues, v, p, labels, c, "cleanlab") if method == "cleanlab" else None)
            indices = sel.indices
            row.update(proxy_accuracy=sel.scores["proxy_accuracy"], selection=str(path))
        else:
            flagged = None
            if self.cfg.select.filter != "none":
                flagged = self.flagged(issues, v, p, labels, c, "filter")
            sel, path = self.selection(v, method, budget, seed, vdd, labels, p, c, train_x, flagged)
            selections[(v, budget, seed, method)] = sel
            indices = sel.indices
            row.update(selection_seconds=sel.meta["selection_seconds"],
                       proxy_accuracy=sel.scores["proxy_accuracy"], selection=str(path))
        chosen = np.arange(n) if indices is None else indices
        counts = [np.bincount(x, minlength=p.num_classes).tolist() for x in (labels[chosen], labels)]
        gone = missing_classes(*counts)
        if gone:  # as `jaxsel select` says of its selection, before the finetune; the report notes them too
            from jaxsel.experiment.report import percent
            names = vdd["train"].features["label"].names
            warn(f"{v} {method} {percent(budget)} seed {seed}: the subset holds {no_example_of(gone, names)}")
        tag = f"{v}-{method}-{'all' if budget is None else stages.budget_tag(budget)}-s{seed}-finetune"
        m = self.finetune(tag, vdd, indices, seed)
        row.update(test_accuracy=m["test_accuracy"], test_macro_f1=m["test_macro_f1"],
                   validation_accuracy=m["validation_accuracy"], finetune_seconds=m["train_seconds"],
                   finetune_malloc=m.get("malloc"),
                   examples=int(len(chosen)), corrupted_chosen=int(flags.any(0)[chosen].sum()),
                   flipped_chosen=int(flags[0, chosen].sum()), duplicates_chosen=int(flags[1, chosen].sum()),
                   steps=m.get("steps"), examples_seen=m.get("examples_seen"),
                   label_counts=counts[0], train_label_counts=counts[1],
                   subset_digest=None if indices is None else digest(np.asarray(indices)))  # seeds that chose alike
        return row

    def execute(self) -> dict:
        """Run (or resume) every stage and return the results document."""
        from jaxsel import label_issues
        t_start = time.perf_counter()
        dd = self.dataset()
        _note_other_data(self.out, dd)
        with label_issues.class_names(dd["train"].features["label"].names):  # what its warnings call the classes
            return self._stages(dd, t_start)

    def _check_steps(self, n: int, classes: int) -> None:
        """Warn where a budget's finetunes plan fewer than :data:`MIN_STEPS_PER_CLASS` optimizer steps
        per class (of ``n`` train rows): trained that little, the subsets' comparison is mostly noise (a
        user's 10-class file: 21 steps, loss 1.1-1.3 against chance's 2.3, the ranking flipping between
        two runs)."""
        from jaxsel.finetune import planned_steps
        if set(self.cfg.methods) == {"full"}:
            return
        b = min(self.cfg.budgets)
        examples = budget_examples(b, n)
        steps, epochs = planned_steps(self.cfg.finetune, examples)
        need = MIN_STEPS_PER_CLASS * classes
        if steps < need:
            cap = self.cfg.finetune.max_steps
            warn(f"the {b:.4g} subsets' finetunes plan {counted(steps, 'optimizer step')} "
                 f"({counted(examples, 'example')}, {counted(epochs, 'epoch')}) for {classes} classes: trained that "
                 f"little their comparison is mostly noise; [finetune] min_steps = "
                 f"{max(100, need)} trains every subset at least that many (100: the whole-dataset protocol, "
                 f"bench/README.md)" + (f", with max_steps ({cap}) raised to match" if cap is not None and cap < need
                                        else ""), once=True)

    def _stages(self, dd, t_start: float) -> dict:
        """:meth:`execute` once the dataset ``dd`` is loaded (at ``t_start``)."""
        from jaxsel.experiment import report
        try:
            check_budgets(self.cfg.budgets, len(dd["train"]))  # the noisy variants only add rows
        except JaxselError as e:  # the file's budgets, as load_config's errors name it
            if self.where is None:
                raise
            raise JaxselError(f"{self.where}: {e}") from None
        self._check_steps(len(dd["train"]), len(dd["train"].features["label"].names))
        if self.cfg.stages and not self.stage_dir.exists():  # a relative path is the working folder's (a file: the error below)
            log.info(f"the stage folder {self.stage_dir.absolute()} (`stages`) does not exist: made now, every "
                     f"stage is computed")
        self.stage_dir.mkdir(parents=True, exist_ok=True)  # after the data loads: a bad file leaves no folder
        emb = self.embeddings(dd)
        clean = self.clustering(dd, emb)
        variants = {}
        for v in self.cfg.variants:
            vdd, train_x, c, flags = self.variant(v, dd, emb, clean)
            p, secs = self.make_proxy(vdd, train_x, c, emb)
            variants[v] = (vdd, np.asarray(column(vdd["train"], "label")), c, p, flags, train_x)
            self.timings[f"proxy_seconds_{v}"] = secs
        self.validation = emb["validation"], np.asarray(column(dd["validation"], "label"))
        rows, selections, maps, issues = [], {}, None, {}
        self.check_unflagged(variants, issues)
        cells = self.cells()
        bar = progress_.bar(cells, desc=f"run {self.cfg.name}", unit="cell", disable=not self.progress)
        for i, (seed, v, budget, method) in enumerate(bar):
            tag = f"{v} {method} {'' if budget is None else stages.budget_tag(budget)} seed {seed}"
            bar.set_postfix_str(tag)
            with metrics.scope("/".join(tag.replace(" seed ", " s").split())):
                row = self.cell(seed, v, budget, method, variants[v], selections, issues)
            rows.append(row)
            if i + 1 == len(cells) or cells[i + 1][0] != seed:
                maps = self.maps(selections, variants) if maps is None else maps  # the first seed's picks
                doc = self.report(dd, rows, maps, time.perf_counter() - t_start)
        if self.progress:
            print(report.markdown(doc["summary"], doc["dataset"]["labels"]))
        return doc


def _note_other_config(out: Path, source: str | None) -> None:
    """A note when ``out`` holds the results of another config file than ``source`` (as its
    results.json records it): its report is replaced. An edited copy of a shipped config that kept
    its ``name`` had replaced the main job's report without a word."""
    try:
        before = read_json(out / "results.json").get("config_file")
    except (OSError, ValueError, AttributeError):
        return
    if before and source and before != source:
        log.info(f"{out} holds the results of another config file ({before}); its report and results.json "
                 f"are replaced by {source}'s (stages whose settings match are reused)")


def _note_other_data(out: Path, dd) -> None:
    """A note when ``out`` holds the results of other data than ``dd`` (its results.json's dataset
    fingerprint): the stages keyed by other data are not reused and the results are replaced, which a
    rerun after an edit of the data file had done without a word (break-it round 52)."""
    try:
        before = read_json(out / "results.json")["dataset"]["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if before != (now := dataset_fingerprint(dd)):
        log.info(f"{out} holds the results of other data (dataset fingerprint {before[:12]}, now {now[:12]}: the file "
                 f"changed, or is read otherwise): stages not yet computed for this data are computed, its results replaced")


def default_out(name: str, data_overrides: dict) -> str:
    """A run's default folder: runs/NAME, with a ``--data`` override's stem (runs/quick-tweets), and
    a short hash of a data file's absolute path and the other reading options given (None: not
    given), so two files named alike, or one file read two ways, never share a run folder."""
    given = {k: v for k, v in data_overrides.items() if v is not None}
    data = given.pop("name", None)
    if data is not None and Path(data).exists():
        given["file"] = os.path.abspath(data)
    return f"runs/{name}" + (f"-{short_name(Path(data).stem)}" if data is not None else "") + options_tag(given)


def run(config: str | Path | RunConfig, out: str | Path | None = None, *, progress: bool = True,
        log_dir: str | Path | None = None, **data_overrides) -> dict:
    """Run (or resume) a config; returns the results document also written to ``OUT/results.json``,
    plus ``out``, ``finetunes_reused`` and ``selections_reused`` (the finetunes and selections the stage
    folder already held) and ``selections_made`` (the others, "variant method budget seed N").
    ``log_dir``: write step metrics there (:mod:`jaxsel.metrics`), each cell's under its
    ``variant/method/budget/seed`` stage.

    ``data_overrides`` (name, text_col, label_col, ...) replace the config's ``[data]`` fields where not
    None (:func:`jaxsel.config.load_config`'s, for a file); an unknown one raises JaxselError.

    Leaves jax's configuration alone: call :func:`jaxsel.assets.enable_compilation_cache` first to
    keep compiled programs on disk across runs, as ``jaxsel run`` does."""
    if not isinstance(config, (str, os.PathLike, RunConfig)):
        raise JaxselError(f"run takes a config file's path or a RunConfig, got {type(config).__name__}")
    source = where = None
    if isinstance(config, RunConfig):  # the overrides replace its [data] fields, checked as a file's would be
        given = {k: v for k, v in data_overrides.items() if v is not None}
        cfg = config if not given else dataclasses.replace(config, data=build(
            DataSpec, {**dataclasses.asdict(config.data), **given}, "run(..., **data_overrides) [data]"))
    else:
        path = config_file(config)  # the shipped copy where the working folder has none (a note says so)
        cfg = load_config(path, **data_overrides)
        source, where = str(path.resolve()), str(path)
        if out is None and path.stem != cfg.name:
            log.info(f"{path} names its run {cfg.name!r} (its `name`; {RunConfig.name!r} where it gives none): the "
                     f"results go to {default_out(cfg.name, data_overrides)}; set `name`, or give an output folder "
                     f"(--out; run(..., out=) from Python), to put them elsewhere")
    if out is None:
        out = default_out(cfg.name, data_overrides)
    _note_other_config(Path(out), source)
    with exclusive(out), metrics.logging_to(log_dir):
        r = Run(cfg, Path(out), progress, source, where=where)
        doc = r.execute()
    doc.update(out=str(out), finetunes_reused=r.finetunes_reused, selections_reused=r.selections_reused,
               selections_made=r.selections_made)
    return doc
