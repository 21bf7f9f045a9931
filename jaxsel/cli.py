"""The ``jaxsel`` command line: ``data``, ``embed``, ``cluster``, ``select``, ``export``, ``finetune``, ``run``.

User mistakes end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from jaxsel.errors import MAX_INT, JaxselError, JaxselWarning, counted, filter_action, say, warn, warnings_as_lines
from jaxsel.checkpoint import MARKER, STEP, Stopwatch
from jaxsel.io import check_not_input, options_tag, short_name, writes_files
from jaxsel.baselines import METHODS as BASELINE_METHODS, random_indices
from jaxsel.data import BUILTIN, DEFAULT as DEFAULT_DATA, MISSING_CHOICES, column, source_name
from jaxsel.config import (FILTERS, KMEANS_METHODS, LENGTH_BUCKETS, MAX_PREFERENCE_RATE, NETWORK, NETWORKS, SCORE_ON,
                           ClusterSpec, DataSpec, EmbedSpec, FinetuneConfig, RunConfig, SelectSpec, build, model_files)
from jaxsel.selection import AGENTS, BALANCES, GRANULARITIES, METHODS, checked_examples, no_example_of, parse_budget

log = logging.getLogger("jaxsel.cli")  # not __name__: "__main__" under python -m jaxsel.cli

# the CLI's defaults are the config dataclasses' defaults (one config system)
EMBED, CLUSTER, SELECT, FINETUNE, PROXY = EmbedSpec(), ClusterSpec(), SelectSpec(), FinetuneConfig(), RunConfig().proxy
MALLOC_NOTE = ("On Linux this command keeps XLA's freed memory in the process (glibc malloc, one arena; "
               "jaxsel.allocator): finetuning runs 1.3-1.6x faster on CPU, PPO 15-40% slower. JAXSEL_MALLOC=system "
               "or a malloc setting of your own (MALLOC_* or GLIBC_TUNABLES=glibc.malloc...) keeps glibc's defaults.")
CLUSTER_TABLE = 32  # members sampled per cluster by `jaxsel cluster` (fixed-size proxies)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once: not again where its help already says "(default: ...)",
    and not "(default: None)" (unset: `jaxsel run` and `export` then read the config's or the
    selection's setting)."""

    def _get_help_string(self, action):
        if "(default" in (action.help or "") or action.default is None:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse that shows defaults in --help and ends a usage mistake with one line, exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """argparse's, an unknown option named by the command it was given to ("jaxsel select: error:
        unrecognized arguments: --bogus (see jaxsel select --help)"), as its other mistakes are."""
        found, extra = self.parse_known_args(args, namespace)
        if extra:
            commands = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})
            commands.get(getattr(found, "command", None), self).error(f"unrecognized arguments: {' '.join(extra)}")
        return found


def _budget(text: str) -> float:
    """argparse type of a budget: :func:`parse_budget`, its message kept."""
    try:
        return parse_budget(text)
    except JaxselError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _number_in(low: float, high: float):
    """argparse type of a number in [low, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}], got {text}")
        return value
    return parse


def _out(text: str) -> str:
    """argparse type of an --out path: not ``-``, which had written files named ``-`` and
    ``-.jaxsel.json`` into the working folder (jaxsel writes files, not standard output)."""
    if text.strip() == "-":
        raise argparse.ArgumentTypeError("jaxsel writes files, not standard output: name a file or folder "
                                         "(for a pipe, export to a file and cat it)")
    return text


def _at_least(low: int):
    """argparse type of an integer >= ``low`` (and at most :data:`jaxsel.errors.MAX_INT`)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if value > MAX_INT:  # counts past int32 overflowed inside jax
            raise argparse.ArgumentTypeError(f"must be at most {MAX_INT}, got {value}")
        return value
    return parse


# how a dataset is read: CLI option -> (data.load keyword, default)
_LOAD = {"text_col": ("text_col", "text"), "label_col": ("label_col", "label"), "split_col": ("split_col", None),
         "split_seed": ("seed", 0), "dedup": ("dedup", False), "encoding": ("encoding", None),
         "missing_labels": ("missing_labels", DataSpec.missing_labels),
         "merge_label_case": ("merge_case", DataSpec.merge_case), "min_class_rows": ("min_class_rows", DataSpec.min_class_rows)}


def _dataset_args(p: argparse.ArgumentParser, recorded: str | None = None) -> None:
    """The dataset and how to read it. ``recorded`` ("option" for export, "positional" for finetune):
    every reading option defaults to None and, when not given, comes from the selection's record."""
    where = ("built-in name (tweets, rotten_tomatoes, bbc_news), a CSV/TSV(.gz), JSON/JSONL or Parquet file, a "
             "datasets save_to_disk folder, or a hub dataset")
    given = (lambda default: None) if recorded else (lambda default: default)
    if recorded == "option":
        p.add_argument("--data", default=None, help=where + " (default: the one the selection records)")
    elif recorded == "positional":
        p.add_argument("data", nargs="?", default=None,
                       help=where + " (default: the one --selection records, else tweets)")
    else:
        p.add_argument("data", nargs="?", default=DEFAULT_DATA, help=where)
    recorded_note = " (default: as the selection records)" if recorded else ""
    p.add_argument("--text-col", default=given("text"), help="column holding the texts" + recorded_note)
    p.add_argument("--label-col", default=given("label"), help="column holding the labels" + recorded_note)
    p.add_argument("--split-col", default=None, type=str if recorded else (lambda name: name or None),  # '': none
                   help="column with an existing train/validation/test split (any case; dev, val, valid: validation); "
                        "'' for none (a seeded 80/10/10 split), e.g. to clear a config's"
                        + (recorded_note or " (default: none)"))
    p.add_argument("--split-seed", type=_at_least(0), default=given(0),
                   help="seed of the stratified 80/10/10 split" + recorded_note)
    p.add_argument("--dedup", action="store_true", default=given(False), help="drop exact duplicate texts (the first row of each stays, the first outside the "
                                                                   "test split with a split column)" + recorded_note)
    p.add_argument("--encoding", default=None,
                   help="text encoding of a CSV/TSV/JSON file (default: UTF-8, UTF-16/32 by byte-order mark, else Windows-1252)")
    _label_args(p, overrides=recorded_note or None)


def _label_args(p: argparse.ArgumentParser, overrides: str | None = None) -> None:
    """Label options; with ``overrides`` (jaxsel run, export, finetune: the help's note on where the
    default comes from) they default to None: the config or the selection's record decides."""
    d = DataSpec()
    note = overrides or ""
    p.add_argument("--missing-labels", default=None if overrides else d.missing_labels, choices=MISSING_CHOICES,
                   help="rows without a label (empty, NaN, null, or a marker such as none, N/A, NA): drop and count "
                        "them, stop, or keep the markers as class names (only empty and null cells dropped)" + note)
    p.add_argument("--merge-label-case", action="store_true", default=None if overrides else d.merge_case,
                   help="labels that differ only by case are one class (spelled as most rows outside the test split "
                        "spell it)" + note)
    p.add_argument("--min-class-rows", type=_at_least(0), default=None if overrides else d.min_class_rows,
                   help="drop the classes with fewer rows than this (0: keep every class; with a split column, rows "
                        "outside the test split are counted)" + note)


def _data_record(a) -> dict:
    """How this command read its dataset, for a selection to record: the dataset (a file as an
    absolute path, so the record works from any folder) and every reading option."""
    return {"dataset": source_name(a.data), "data_options": {opt: getattr(a, opt) for opt in _LOAD}}


def _recorded(a, meta: dict) -> None:
    """Fill the reading options ``a`` leaves None (and ``a.data``) from a selection's ``meta``; a
    selection made by ``jaxsel run`` records its whole ``[data]`` table (``a.data_spec``)."""
    a.data_spec = None
    if a.data is None and "data_spec" in meta:
        if meta.get("variant", "clean") != "clean":
            raise JaxselError(f"this selection indexes the run's {meta['variant']} variant (labels flipped and "
                              f"copies added by the run), not the dataset itself: use a clean-variant selection")
        given = next((opt for opt in _LOAD if getattr(a, opt) is not None), None)
        if given is not None:  # it was ignored: the recorded [data] table reads the dataset
            raise JaxselError(f"this selection records how its run read the data (its config's [data] table); "
                              f"--{given.replace('_', '-')} cannot change that: leave it out")
        build(DataSpec, meta["data_spec"], "the selection's meta data_spec")  # a hand-edited one: one line
        a.data_spec = meta["data_spec"]
    if a.data is None and a.data_spec is None and Path(meta.get("dataset") or "").is_absolute() \
            and not Path(meta["dataset"]).exists():  # a file recorded as an absolute path
        raise JaxselError(f"the selection's dataset {meta['dataset']} is no longer there: give the file with "
                          f"--data (its content is checked against the selection's fingerprint)")
    a.data = a.data or meta.get("dataset")
    recorded = {opt: value for opt, value in meta.get("data_options", {}).items() if opt in _LOAD}
    changed = [f"--{opt.replace('_', '-')} {getattr(a, opt)!r} (the selection's: {value!r})"
               for opt, value in recorded.items() if getattr(a, opt) is not None and
               (getattr(a, opt) or None) != (value or None)]  # '' and None: no split column
    if changed:  # a dataset read otherwise than the selection's is refused by its fingerprint: say why first
        log.info(f"read otherwise than the selection: {', '.join(changed)}")
    for opt, value in recorded.items():
        if getattr(a, opt) is None:
            setattr(a, opt, value)
    for opt, (_, default) in _LOAD.items():
        if getattr(a, opt) is None:
            setattr(a, opt, default)
    a.split_col = a.split_col or None  # '' (none, over a recorded one) reads as the default: one output folder


def _embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=EMBED.model, help="minilm, hash (weight-free), or a local BERT folder")
    p.add_argument("--max-length", type=_at_least(2), default=EMBED.max_length, help="tokens per text when embedding")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype of the embedder")


READ_OPTIONS = ("text_col", "label_col", "split_col", "split_seed", "dedup", "encoding", "missing_labels",
                "merge_label_case", "min_class_rows")  # how a dataset is read
EMBED_OPTIONS = ("model", "max_length", "dtype")


UNTAGGED = ("help", "out", "resume", "log_dir", "coordinator", "num_processes", "process_id", "join_timeout",
            "distributed", "data", "selection")  # options that never change what a command writes


def _output_options(p: argparse.ArgumentParser, named: str) -> dict:
    """The defaults of ``p``'s options that change what it writes: all but :data:`UNTAGGED` and
    ``named``, the one the output's name spells out."""
    return {act.dest: act.default for act in p._actions if act.dest not in UNTAGGED + (named,)}


def _options_tag(a) -> str:
    """"-" and a short hash of the options ``a`` sets away from their defaults (``a.tagged``, set by
    the subcommand: how the data is read and embedded, and for select and finetune every option of
    theirs that changes the result), "" when none: the default output names carry it, so data read
    or embedded differently, or a selection with another budget, never overwrites an output."""
    changed = {k: getattr(a, k) for k, default in a.tagged.items() if getattr(a, k) != default}
    return options_tag(changed)


def _data_folder(data: str) -> Path:
    """The default output folder of a dataset, runs/DATA: a built-in or hub dataset by its name, a
    file by its stem plus a hash of its absolute path, so files named alike in two folders
    (a/d.csv, b/d.csv) never overwrite each other's outputs."""
    if data in BUILTIN or not Path(data).exists():
        return Path("runs") / Path(data).stem
    return Path("runs") / f"{short_name(Path(data).stem)}-{hashlib.sha256(source_name(data).encode()).hexdigest()[:6]}"


MADE: list[Path] = []  # folders this command created (_writable), removed again where empty if it fails
RESUME: list[str] = []  # how to continue this command after Ctrl-C (set once its output folder is known)
RESUMABLE: list[Path] = []  # the checkpoint folder a --resume would continue from (select, finetune)


def _resumable(out: Path) -> None:
    """After Ctrl-C, suggest ``--resume --out OUT`` (select, finetune) once OUT holds a checkpoint."""
    RESUME[:], RESUMABLE[:] = [f"to continue, rerun with --resume --out {out}"], [out / "checkpoints"]


def interrupted() -> str:
    """The line a Ctrl-C ends a command with: what was interrupted and how to continue it (nothing
    about --resume while its checkpoint folder holds no checkpoint yet)."""
    if RESUMABLE and not _checkpoints_held(RESUMABLE[0]):
        return "jaxsel: interrupted (no checkpoint was written yet: rerunning the command starts afresh)"
    return "jaxsel: interrupted" + (f" ({RESUME[0]})" if RESUME else "")
LOCKS = contextlib.ExitStack()  # output folders this command holds (_exclusive)


def _exclusive(folder: Path) -> Path:
    """``folder``, locked against other jaxsel processes until this command ends (:func:`jaxsel.io.exclusive`),
    without the temporary files a killed command left there."""
    from jaxsel.io import exclusive, remove_stale_temporaries
    LOCKS.enter_context(exclusive(folder))
    remove_stale_temporaries(folder)  # what a killed command left (no other process writes here now)
    return folder


def _writable(path: Path, folder: bool = False) -> Path:
    """``path`` once its folder (``folder``: the path itself) exists and can be written, so a bad
    --out fails before any work; raises JaxselError naming it."""
    from jaxsel.io import ensure_folder
    target = (path if folder else path.parent).absolute()
    new = [d for d in (target, *target.parents) if not d.exists()]
    ensure_folder(target, path)
    MADE.extend(new)
    return path


def _remove_empty_made() -> None:
    """Remove the folders in :data:`MADE` (and the folders under them) that hold no file: a failed
    command leaves no empty output folder behind, and never touches one that has content."""
    for top in MADE:
        for folder, _, _ in os.walk(top, topdown=False):  # a folder's subfolders before it
            try:
                os.rmdir(folder)  # only succeeds when empty
            except OSError:
                pass
    MADE.clear()


def _load(a, warnings: bool = True):
    """The dataset as ``a`` reads it; with ``warnings``, what loading dropped and any leakage or
    conflicting labels, one line each (:func:`jaxsel.data.warn_summary`), as ``jaxsel run`` says."""
    from jaxsel import data
    if getattr(a, "data_spec", None):  # as the run that made the selection read it, caps included
        from jaxsel import experiment
        dd = experiment.load_dataset(DataSpec(**a.data_spec))
    else:
        dd = data.load(a.data, **{kw: getattr(a, opt) for opt, (kw, _) in _LOAD.items()})
    if warnings:
        data.warn_summary(dd)
    return dd


def _embed(a, dd, splits: tuple[str, ...] | None = None):
    """The embeddings of ``splits`` (default the splits selection and label checks read, never test)."""
    from jaxsel import data, embed
    splits = splits or data.SELECTION_SPLITS
    return embed.embed_dataset(dd, a.model, max_length=a.max_length, dtype=a.dtype, splits=splits)


def printable(name: str) -> str:
    """A class name for one line of a table: its newlines, tabs and other control characters escaped
    (round 31: a label "a\\nb" broke the table's header in two)."""
    return name if name.isprintable() else repr(name)[1:-1]


def cmd_data(a) -> None:
    from jaxsel import data
    dd = _load(a, warnings=False)  # its summary says them
    s = data.summary(dd)
    if a.label_issues:
        s["label_issues"] = _label_issues(a, dd)
    if a.json:
        print(json.dumps(s, indent=2))
        return
    names = [printable(n) for n in s["labels"]]
    print(f"dataset {a.data}  fingerprint {s['fingerprint']}  duplicate texts in source: {s['duplicates_in_source']}")
    print(f"rows dropped when loading: {s['dropped']['missing_label']} without a label, "
          f"{s['dropped']['empty_text']} with an empty text, {s['dropped']['small_class']} of too small a class, "
          f"{s['dropped']['deduplicated']} repeating an earlier text (--dedup)")
    w = min(max([12] + [len(n) for n in names]), 40) + 1  # whole class names (ids past 12 digits told apart)
    print(f"{'split':<11}{'rows':>7}" + "".join(f"{n[:w - 1]:>{w}}" for n in names) + f"{'dup texts':>11}")
    for split, r in s["splits"].items():
        print(f"{split:<11}{r['rows']:>7}" + "".join(f"{r['label_counts'][n]:>{w}}" for n in s["labels"])
              + f"{r['duplicate_texts']:>11}")
    for line in data.summary_warnings(s):
        warn(line)
    if a.label_issues:
        li = s["label_issues"]
        print(f"label issues (cleanlab on leave-one-cluster-out ridge predictions, k={li['k']}): "
              f"{li['flagged']} of {li['rows']} train examples ({li['flagged'] / li['rows']:.1%})")
        for c in li["clusters"]:
            print(f"  cluster {c['cluster']:>4}: {c['size']:>5} examples, {c['flagged']:>5} flagged, "
                  f"{c['agreement']:.0%} agree with the rest of the data, mostly labelled {c['label']!r}")


def _label_issues(a, dd) -> dict:
    """Flag likely label errors of the train split: embed, k-means, ridge proxy, cleanlab."""
    from jaxsel import cluster, label_issues, proxy
    emb = _embed(a, dd)
    labels = np.asarray(column(dd["train"], "label"))
    names = dd["train"].features["label"].names
    if a.k > len(labels):
        log.info(f"--k {a.k} is more than the {len(labels)} train rows; using k = {len(labels)}")
    c = cluster.kmeans(emb["train"], min(a.k, len(labels)), seed=a.seed)
    p = proxy.make(emb["train"], labels, c, emb["validation"], column(dd["validation"], "label"), proxy.ProxyConfig())
    flagged = label_issues.find(p, labels, c.assignment, names=names)
    agree = label_issues.cluster_agreement(labels, label_issues.out_of_cluster_probs(p, c.assignment), c.assignment, c.k)
    per = np.bincount(c.assignment, flagged, c.k)
    worst = [j for j in np.argsort(-per / np.maximum(c.sizes, 1), kind="stable")[:10] if per[j] > 0]
    return {"k": c.k, "rows": len(labels), "flagged": int(flagged.sum()),
            "clusters": [{"cluster": int(j), "size": int(c.sizes[j]), "flagged": int(per[j]),
                          "agreement": float(agree[j, 0]),
                          "label": names[int(np.bincount(labels[c.assignment == j]).argmax())]} for j in worst]}


def cmd_embed(a) -> None:
    from jaxsel import data, embed
    dd = _load(a)
    t = time.perf_counter()
    emb = _embed(a, dd, data.SPLITS)
    path = embed.cache_file(data.dataset_fingerprint(dd), a.model, a.max_length, a.dtype)
    for s, e in emb.items():
        print(f"{s:<11}{e.shape[0]:>7} x {e.shape[1]}")
    where = f"cached at {path}" if path.exists() else "not cached (see the warning)"
    print(f"embeddings {where} ({time.perf_counter() - t:.1f}s)")


def cmd_cluster(a) -> None:
    from jaxsel import cluster, data
    tags = ["-strat" * a.stratified, f"-{a.method}" * (a.method != CLUSTER.method), f"-s{a.seed}" * (a.seed != 0),
            f"-table{a.table_size}" * (a.table_size != CLUSTER_TABLE)]
    name = f"clustering-k{a.k}{''.join(tags)}{_options_tag(a)}.npz"
    out = Path(a.out or _data_folder(a.data) / name)
    if a.out and (a.out.endswith(("/", os.sep)) or out.is_dir()):
        out = out / name  # --out names a folder
    check_not_input(out, a.data)
    if out.suffix.lower() != ".npz":
        raise JaxselError(f"--out {a.out}: a clustering is saved as .npz; name a .npz file or a folder")
    _writable(out)
    dd = _load(a)
    emb = _embed(a, dd, ("train",))["train"]
    t = time.perf_counter()
    labels = column(dd["train"], "label") if a.stratified else None
    c = cluster.kmeans(emb, a.k, seed=a.seed, method=a.method, labels=labels, table_size=a.table_size, progress=True)

    c.meta.update(dataset=a.data, fingerprint=data.dataset_fingerprint(dd), embed_model=a.model)
    c.save(out)
    print(f"{c.k} clusters of {len(c.assignment)} train examples in {time.perf_counter() - t:.1f}s: "
          f"sizes min {c.sizes.min()} / median {int(sorted(c.sizes)[c.k // 2])} / max {c.sizes.max()}, "
          f"inertia {c.inertia:.1f}")
    print(f"wrote {out}")


def _checkpoints_held(folder: Path) -> bool:
    """Whether a checkpoint folder holds a checkpoint (its wall-clock file and its marker alone do not
    count: a run stopped before its first checkpoint has nothing to resume)."""
    return folder.is_dir() and any(p.name not in ("seconds.json", MARKER) for p in folder.iterdir())


def _selection_checkpoints(folder: Path) -> bool:
    """Whether ``folder`` holds a selection's checkpoints: its agent's (marked) or its search log."""
    return (folder / "agent" / MARKER).is_file() or (folder / "search.json").is_file()


def _checkpoints_folder(folder: Path) -> bool:
    """Whether ``folder`` is a jaxsel command's checkpoints folder: orbax steps under its marker (a
    finetune's), or a selection's ``checkpoints/`` (:func:`_selection_checkpoints`)."""
    return (folder / MARKER).is_file() or folder.name == "checkpoints" and _selection_checkpoints(folder)


def _own_folder(out: Path, result: str) -> None:
    """Refuse (JaxselError) an output folder for the command whose result file is ``result`` that
    another command's output holds, or that lies inside a checkpoints folder: a finetune given a
    selection's folder had cleared the selection's agent checkpoints (another start there replaces
    OUT/checkpoints), and one given ``OUT/checkpoints`` trained afresh beside the checkpoints it was
    meant to resume (break-it round 50)."""
    full = out.absolute()  # every parent folder, not only those a relative --out names
    marked = [p for p in (full, *full.parents) if _checkpoints_folder(p)]
    if marked:
        inside = marked[-1]  # the outermost: a selection's agent/ lies in its checkpoints/
        where = "" if inside == full else f"inside {inside}, "
        raise JaxselError(f"--out {out} is {where}an earlier run's checkpoints folder: give that run's own folder "
                          f"({inside.parent}) to resume it, or a new one")
    ck = out / "checkpoints"
    owned = {"selection.json": ("jaxsel select", "selection.json or its checkpoints", _selection_checkpoints(ck)),
             "metrics.json": ("jaxsel finetune", "metrics.json or its checkpoints",
                              ck.is_dir() and any(STEP.fullmatch(p.name) for p in ck.iterdir())),
             "results.json": ("jaxsel run", "results.json", False)}  # a run keeps its stages apart
    for name, (command, what, held) in owned.items():
        if name != result and ((out / name).is_file() or held):
            raise JaxselError(f"--out {out} holds the output of {command} ({what}): give this command a folder "
                              f"of its own")


def _start(out: Path, result: str, a) -> None:
    """As soon as a command that trains into ``out`` knows it, before any work: a note when a start
    without --resume is about to replace the checkpoints of an earlier, perhaps stopped, run in
    OUT/checkpoints, or when --resume finds none there (a new user's rounds: both went without a word;
    a --resume spelled with other options names another folder). Such a start removes the earlier
    run's ``result`` file (one that failed left it, read as its own), and a --log-dir inside the
    checkpoints folder, whose contents a fresh start clears, is refused (JaxselError), as is an OUT
    another command's output holds (:func:`_own_folder`). The command opens its --log-dir itself, after this."""
    _own_folder(out, result)
    folder = out / "checkpoints"
    if a.log_dir and Path(a.log_dir).resolve().is_relative_to(folder.resolve()):
        raise JaxselError(f"--log-dir {a.log_dir} is inside the checkpoints folder {folder}, whose contents a fresh "
                          f"start clears: give the step metrics a folder outside it")
    held = _checkpoints_held(folder)
    if not a.resume and held:
        log.info(f"{folder} holds an earlier run's checkpoints; starting afresh replaces them "
                 f"(--resume continues that run if it ran these settings with this jaxsel's algorithms)")
    elif a.resume and not held:
        log.info(f"no checkpoint to resume in {folder}: starting from the beginning (a run with other "
                 f"options has another default folder)")
    if (not a.resume or not held) and writes_files():
        (out / result).unlink(missing_ok=True)


def cmd_select(a) -> None:
    from jaxsel import agents, data, label_issues, metrics, proxy
    from jaxsel.experiment import stages
    if a.quota is not None and a.granularity != "quota":
        raise JaxselError("--quota sets the examples per pick of --granularity quota; add --granularity quota")
    if a.network == NETWORK:  # the agents' default spelled out: the same selection, so the same default folder
        a.network = None
    if a.filter != "none" and a.method in BASELINE_METHODS + ("full",):
        log.info(f"--filter applies to RL and the cluster searches; {a.method} ignores it")
        a.filter = "none"
    agent_options = ("steps", "network", "preference_rate")  # the RL agents' own (agents.ignored leaves them out)
    if a.method not in AGENTS and any(getattr(a, k) != a.tagged[k] for k in agent_options):
        log.info(f"--steps, --network and --preference-rate set the RL agents (ppo, dqn); {a.method} ignores them")
    agent = dict(preference_rate=a.preference_rate, **({} if a.network is None else {"network": a.network}))
    ppo_cfg, dqn_cfg = (agents.agent_config(m, a.steps, agent) for m in AGENTS)
    cfg = agents.SelectConfig(method=a.method, budget=a.budget, seed=a.seed, surrogate_rounds=a.surrogate_rounds,
                              granularity=a.granularity, quota=a.quota, horizon=a.horizon, agreement=a.agreement,
                              similarity=a.similarity, balance=a.balance, ppo=ppo_cfg, dqn=dqn_cfg)
    unread = {f.name for f in dataclasses.fields(cfg)} - agents.reads(cfg) | \
        (set() if a.method in AGENTS else set(agent_options))
    a.tagged = {k: v for k, v in a.tagged.items() if k not in unread}  # the default folder: what the method reads
    out = _exclusive(_writable(Path(a.out or _data_folder(a.data) / f"{a.method}{_options_tag(a)}"), folder=True))
    _resumable(out)
    _start(out, "selection.json", a)
    dd = _load(a)
    emb = _embed(a, dd)
    fp = data.dataset_fingerprint(dd)
    labels = np.asarray(column(dd["train"], "label"))
    seeds = {part: a.seed if seed is None else seed for part, seed in (("cluster", a.cluster_seed), ("proxy", a.proxy_seed))}
    spec = ClusterSpec(k=a.k, seed=seeds["cluster"], stratified=a.stratified, order=a.order, method=a.cluster_method)
    stage_dir = out.absolute().parent / "stages"  # OUT/../stages however OUT is spelled ("." too)
    c = stages.clustering(stage_dir, fp, emb["train"], spec, EmbedSpec(a.model, a.max_length, a.dtype), labels)
    with Stopwatch(out / "checkpoints" / "seconds.json", resume=a.resume) as clock, metrics.logging_to(a.log_dir), \
            label_issues.class_names(dd["train"].features["label"].names):  # interrupted attempts too; warnings' classes
        p = proxy.make(emb["train"], labels, c, emb["validation"], column(dd["validation"], "label"),
                       proxy.ProxyConfig(kind=a.proxy, project=a.project or None, val_size=a.val_size,
                                         seed=seeds["proxy"],
                                         objective=a.objective, score_on=a.score_on, neighbors=a.neighbors,
                                         candidates=a.candidates))
        meta = {**_data_record(a), "fingerprint": fp, "embed_model": a.model,
                **({"embed_model_files": files} if (files := model_files(a.model)) else {}),  # a folder's weights
                "embed_max_length": a.max_length, "embed_dtype": a.dtype, "k": a.k, "proxy_kind": a.proxy,
                "objective": a.objective, "score_on": a.score_on, "filter": a.filter, "val_size": a.val_size,
                "project": a.project, "stratified": a.stratified, "order": a.order,
                **({"cluster_method": a.cluster_method} if a.cluster_method != CLUSTER.method else {}),
                **{f"{part}_seed": seed for part, seed in seeds.items() if seed != a.seed}}  # (where not --seed:
        # the signatures of checkpoints from before the two options stay as they were)
        # (Lloyd's unrecorded, as before the option: checkpoints of then still resume; another method's are refused)
        kw = dict(meta=meta, ckpt_dir=out / "checkpoints", resume=a.resume, train_x=emb["train"],
                  warn_missing=False)  # said below, in the command's words
        if a.filter != "none":
            flagged = label_issues.find(p, labels, c.assignment, by=label_issues.FILTER_BY[a.filter])
            validation = (emb["validation"], column(dd["validation"], "label"))
            sel = agents.select_unflagged(flagged, p, c, labels, cfg, validation=validation, **kw)
        else:
            sel = agents.select(p, c, labels, cfg, **kw)
    sel.meta["selection_seconds"] = clock.seconds
    sel.save(out / "selection.json")
    names = dd["train"].features["label"].names
    quota = sel.meta["quota"]
    trimmed = sel.scores.get("untrimmed_examples", 0) > len(sel.indices)  # (a filter's picks: of the kept rows)
    whole = f"untrimmed {sel.scores['proxy_accuracy_whole_clusters']:.4f}, " if trimmed else ""
    n = len(sel.cluster_ids)
    picks = f"{n} {'pick' if quota else 'cluster'}{'' if n == 1 else 's'}" + \
        (f" of up to {quota} example{'' if quota == 1 else 's'}" if quota else "")
    picks = picks if n else "example-level"
    print(f"{a.method}: {len(sel.indices)} of {len(labels)} train examples ({picks}"
          f"{', the last trimmed to the budget' if trimmed else ''}), proxy accuracy of these examples "
          f"{sel.scores['proxy_accuracy']:.4f} ({whole}empty subset "
          f"{sel.scores['proxy_accuracy_empty']:.4f}), log-likelihood {sel.scores['proxy_loglik']:.4f}, "
          f"{sel.meta['selection_seconds']:.1f}s")
    if sel.meta.get("excluded_rows"):
        print(f"filter: {sel.meta['excluded_rows']} train rows flagged by --filter {sel.meta['filter']} were left out "
              f"of the candidates"
              + (f" (class caps {sel.meta['class_caps']} come from the rows left)" if sel.meta.get("class_caps") else ""))
    print("label mix: " + ", ".join(f"{printable(n)} {c} (train {t})" for n, c, t in
                                    zip(names, sel.meta["label_counts"], sel.meta["train_label_counts"])))
    if sel.meta["missing_classes"]:
        gone = sel.meta["missing_classes"]
        whole = a.method not in BASELINE_METHODS and a.granularity == "cluster"
        warn(f"the selection holds {no_example_of(gone, names)} ("
             + ("the method takes classes about in proportion to their train rows: try a larger budget, or a search "
                "with --stratified --balance equal" if a.method in BASELINE_METHODS else
                f"try a larger budget{'' if a.stratified else ' or --stratified clusters'}"
                + (f" or --granularity quota (a pick of whole clusters: {counted(sel.meta['budget_examples'], 'example')} "
                   f"{'is' if sel.meta['budget_examples'] == 1 else 'are'} about {counted(len(sel.cluster_ids), 'cluster')})"
                   if whole else ""))
             + f"{' or a milder --filter' if sel.meta.get('excluded_rows') else ''})")
    print(f"wrote {out / 'selection.json'}")


def cmd_finetune(a) -> None:
    from jaxsel import data, finetune, metrics
    from jaxsel.experiment import report
    from jaxsel.io import write_json
    from jaxsel.selection import Selection
    if a.selection and a.random_fraction:
        raise JaxselError("give --selection or --random-fraction, not both")
    if a.selection:  # the default folder is tagged by the selection file's whole path (see build_parser)
        a.selection = str(Path(a.selection).resolve())
    sel = Selection.load(a.selection) if a.selection else None
    _recorded(a, sel.meta if sel else {})
    if sel and a.data is None:
        raise JaxselError(f"{a.selection} does not record its dataset; give it as the first argument")
    a.data = a.data or DEFAULT_DATA
    cfg = finetune.FinetuneConfig(model=a.model, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                                  max_length=a.max_length, head=a.head, seed=a.seed, grad_accum=a.grad_accum,
                                  lora_rank=a.lora_rank, length_buckets=a.length_buckets, min_steps=a.min_steps)
    kind = f"sel-{Path(a.selection).absolute().parent.name}" if a.selection else \
        'rand' if a.random_fraction else 'full'  # one folder per selection (its folder's name: the method and tag)
    out = _exclusive(_writable(Path(a.out or _data_folder(a.data) / f"finetune-{Path(a.model).name}-{kind}"
                                                                    f"{_options_tag(a)}"), folder=True))
    _resumable(out)
    _start(out, "metrics.json", a)
    dd = _load(a)
    n = len(dd["train"])
    if sel:
        sel.apply(dd)  # refuses another dataset's selection
        indices, source = sel.indices, f"selection {a.selection}"
    elif a.random_fraction:
        indices = random_indices(n, checked_examples(a.random_fraction, n, "--random-fraction"), a.seed)
        source = f"random {a.random_fraction:g} (seed {a.seed})"
    else:
        indices, source = None, "full train set"
    with metrics.logging_to(a.log_dir):
        m = finetune.finetune(dd, indices, cfg, ckpt_dir=out / "checkpoints", resume=a.resume)
    m.update(dataset=a.data, fingerprint=data.dataset_fingerprint(dd), train_source=source,
             environment=report.environment())
    write_json(out / "metrics.json", m)
    used = m["examples_used"]
    print(f"{a.model} on {used} example{'' if used == 1 else 's'} ({source}): test accuracy {m['test_accuracy']:.4f}, "
          f"macro-F1 {m['test_macro_f1']:.4f}, {m['train_seconds']:.1f}s training, {m['tokens_per_s']:,.0f} tokens/s")
    print(f"wrote {out / 'metrics.json'}")


def cmd_export(a) -> None:
    from jaxsel import data
    from jaxsel.selection import Selection, export, export_format
    path = Path(a.selection)
    check_not_input(a.out, path, Selection.indices_path(path), Selection.clusters_path(path))
    fmt = export_format(a.out, a.format)
    sel = Selection.load(path)
    _recorded(a, sel.meta)
    if a.data is None:
        raise JaxselError(f"{a.selection} does not record its dataset; give it with --data")
    _writable(Path(a.out), folder=fmt == "arrow")
    name, how = (a.data_spec["name"], DataSpec(**a.data_spec)) if a.data_spec else (a.data, a)  # as _load reads it
    with data.files_read_once():  # the rows and the other columns from one parse of the file
        extra = None if a.no_source_columns else data.source_columns(
            name, text_col=how.text_col, label_col=how.label_col, encoding=how.encoding)
        out = export(sel, _load(a), a.out, fmt, complement=a.complement, source=a.data, source_columns=extra)
    what = "examples NOT selected" if a.complement else "kept examples"
    print(f"wrote {out} ({fmt}, the {what}) and {out}.jaxsel.json")


def cmd_run(a) -> None:
    from jaxsel import experiment
    if a.log_dir:
        print(f"step metrics: {Path(a.log_dir) / 'metrics.jsonl'}")
    RESUME[:] = ["to continue, rerun the same command: it resumes from its stage folder"]
    doc = experiment.run(a.config, a.out, name=a.data, text_col=a.text_col, label_col=a.label_col,
                         split_col=a.split_col, encoding=a.encoding, missing_labels=a.missing_labels,
                         merge_case=a.merge_label_case, min_class_rows=a.min_class_rows, split_seed=a.split_seed,
                         dedup=a.dedup)
    out = Path(doc["out"])
    made = doc["selections_made"]
    if doc["selections_reused"] or doc["finetunes_reused"]:  # a rerun: which selections an edit changed, if any
        named = f" ({', '.join(made[:4])}{', ...' if len(made) > 4 else ''})" if made else ""
        print(f"selections: {len(made)} made{named}, {doc['selections_reused']} reused from the stage folder")
    reused = f" ({doc['finetunes_reused']} reused from the stage folder)" if doc["finetunes_reused"] else ""
    print(f"{len(doc['rows'])} finetunes{reused} in {doc['run_seconds']:.0f}s; report: {out / 'report.md'}, "
          f"results: {out / 'results.json'}" + (f", step metrics: {a.log_dir}" if a.log_dir else ""))


def _distributed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-process (jax.distributed; run the same command once per process)")
    g.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (default: none, one process)")
    g.add_argument("--num-processes", type=int, default=None, help="how many processes take part (default: one)")
    g.add_argument("--process-id", type=int, default=None,
                   help="this process's rank, 0 .. --num-processes - 1 (default: 0 of one)")
    g.add_argument("--join-timeout", type=_at_least(1), default=300, metavar="SECONDS",
                   help="how long to wait for every process to join (default 300); then the process ends (exit 2)")
    g.add_argument("--distributed", action="store_true",
                   help="join a multi-process run that JAX detects from the cluster's environment (Cloud TPU, SLURM, "
                        "Open MPI) instead of the three flags above")


def _log_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-dir", default=None, help="write step metrics to LOG_DIR/metrics.jsonl (and TensorBoard "
                                                    "event files when tensorboardX is installed; default: none)")


def build_parser() -> argparse.ArgumentParser:
    from jaxsel import code_version
    parser = _Parser(prog="jaxsel", description="RL-guided data selection for finetuning, in JAX")
    parser.add_argument("--version", action="version", version=f"jaxsel {code_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="splits, label counts and duplicates of a dataset")
    _dataset_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--label-issues", action="store_true",
                   help="also embed, cluster (--k) and flag likely label errors of the train split with cleanlab")
    p.add_argument("--k", type=_at_least(1), default=CLUSTER.k, help="clusters for --label-issues")
    p.add_argument("--seed", type=_at_least(0), default=0, help="seed of --label-issues' k-means")
    _embed_args(p)
    p.set_defaults(func=cmd_data)
    p = sub.add_parser("embed", help="embed and cache all splits")
    _dataset_args(p)
    _embed_args(p)
    p.set_defaults(func=cmd_embed)
    p = sub.add_parser("cluster", help="k-means the train split's embeddings and write a clustering")
    _dataset_args(p)
    _embed_args(p)
    p.add_argument("--k", type=_at_least(1), default=CLUSTER.k, help="number of clusters")
    p.add_argument("--stratified", action="store_true", help="cluster each label separately (label-pure clusters)")
    p.add_argument("--method", default=CLUSTER.method, choices=KMEANS_METHODS,
                   help="k-means: full-batch Lloyd iterations or mini-batch updates (faster on large N)")
    p.add_argument("--table-size", type=_at_least(1), default=CLUSTER_TABLE,
                   help="members sampled per cluster for fixed-size proxies")
    p.add_argument("--seed", type=_at_least(0), default=0, help="seed of the k-means initialisation")
    p.add_argument("--out", type=_out, default=None, help="output .npz (default runs/DATA/clustering-kK.npz, "
                                                   "tagged with the options that differ from their defaults; "
                                                   "reading and embedding options as a short hash)")
    p.set_defaults(func=cmd_cluster, tagged={k: p.get_default(k) for k in READ_OPTIONS + EMBED_OPTIONS})
    p = sub.add_parser("select", help="choose a budget of the train set with an RL agent or a search baseline")
    _dataset_args(p)
    _embed_args(p)
    p.add_argument("--method", default="ppo", choices=METHODS,
                   help="RL (ppo, dqn), cluster searches (random-search: best of many random cluster picks, greedy, "
                        "climb), or example-level baselines of the budget's size (random: uniform; stratified: class- and "
                        "cluster-proportional random; typical: per-cluster quotas nearest the centroids; cleanlab: uniform "
                        "among the examples not flagged as label issues), or full")
    p.add_argument("--budget", type=_budget, default=0.05, help="fraction of the train set, e.g. 0.05 or 1/16")
    p.add_argument("--proxy", default=PROXY.kind, choices=("ridge", "knn", "linear", "mlp"),
                   help="ridge: closed-form ridge on PCA features; knn: cosine k-NN vote among the subset's rows")
    p.add_argument("--neighbors", type=_at_least(1), default=PROXY.neighbors, help="knn: the selected rows that vote")
    p.add_argument("--candidates", type=_at_least(1), default=PROXY.candidates,
                   help="knn: each scored row's most similar train rows the vote looks among")
    p.add_argument("--project", type=_at_least(0), default=PROXY.project,
                   help="PCA dimensions for the proxy (0, or the embedding width or more: keep all)")
    p.add_argument("--val-size", type=_at_least(1), default=None,
                   help="score on a stratified validation sample of this size (default: every validation row)")
    p.add_argument("--objective", default=PROXY.objective, choices=("accuracy", "loglik"),
                   help="what the proxy rewards: validation accuracy or mean log-likelihood")
    p.add_argument("--score-on", default=PROXY.score_on, choices=SCORE_ON,
                   help="rows the proxy scores: validation, or validation+train (plus the train rows cleanlab does "
                        "not flag: searches overfit a few hundred validation rows less)")
    p.add_argument("--k", type=_at_least(1), default=CLUSTER.k, help="number of clusters")
    p.add_argument("--stratified", action="store_true", help="cluster each label separately (label-pure clusters)")
    p.add_argument("--cluster-method", default=CLUSTER.method, choices=KMEANS_METHODS,
                   help="k-means: full-batch Lloyd iterations or mini-batch updates (faster on large N; "
                        "jaxsel cluster --method)")
    p.add_argument("--filter", default=SELECT.filter, choices=FILTERS,
                   help="cleanlab: RL and the cluster searches choose among the rows cleanlab does not flag as label "
                        "issues (the budget stays a fraction of all rows); cleanlab+clusters: nor among the clusters "
                        "most of whose rows it flags, nor the rows it flags once refit without those clusters (for "
                        "noise that follows sources or topics); the example-level baselines ignore it")
    p.add_argument("--agreement", action="store_true",
                   help="PPO/DQN observe each cluster's label agreement with the ridge proxy's leave-one-cluster-out "
                        "predictions (a cue for mislabelled clusters)")
    p.add_argument("--similarity", action="store_true",
                   help="PPO/DQN observe each cluster's share of the rows the proxy scores (nearest cluster mean) "
                        "and its density ratio to the pool")
    p.add_argument("--balance", default=SELECT.balance, choices=BALANCES,
                   help="RL and the cluster searches: per-class example caps, proportional to the train split or "
                        "equal; needs --stratified (label-pure clusters)")
    p.add_argument("--steps", type=_at_least(1), default=SELECT.rl_steps, help="environment steps for ppo/dqn")
    p.add_argument("--granularity", default=SELECT.granularity, choices=GRANULARITIES,
                   help="what a pick adds: a whole cluster (the paper) or a cluster's next --quota examples")
    p.add_argument("--quota", type=_at_least(1), default=None, help="examples per pick with --granularity quota "
                                                           "(default: budget / --horizon)")
    p.add_argument("--horizon", type=_at_least(1), default=SELECT.horizon, help="picks per episode that set the default quota")
    p.add_argument("--order", default=CLUSTER.order, choices=("random", "typical"),
                   help="within-cluster order of quota picks and of the trimmed last pick: seeded, or nearest "
                        "the centroid first")
    p.add_argument("--network", default=None, choices=NETWORKS,
                   help="ppo/dqn: early (each cluster's state joins its features before the first layer) or late "
                        f"(after a shared per-cluster embedding: several times the env steps/s); default: "
                        f"{NETWORK} (PPOConfig/DQNConfig.network)")
    p.add_argument("--preference-rate", type=_number_in(0, MAX_PREFERENCE_RATE), default=0.0,
                   help="ppo/dqn: > 0 adds a learned preference per cluster at this multiple of the learning rate "
                        "(e.g. 64; 0: off)")
    p.add_argument("--surrogate-rounds", type=_at_least(0), default=0,
                   help="ppo/dqn: train on a learned reward model (WarmStart + this many refit rounds)")
    p.add_argument("--seed", type=_at_least(0), default=0,
                   help="seeds the agent or baseline, and the clustering and the proxy unless the two options below do")
    p.add_argument("--cluster-seed", type=_at_least(0), default=None,
                   help="seeds the k-means (default: --seed); a `jaxsel run` cell uses the config's [cluster] seed, 0 "
                        "unless set, whatever its seed")
    p.add_argument("--proxy-seed", type=_at_least(0), default=None,
                   help="seeds the proxy's projection and sampling (default: --seed); a `jaxsel run` cell uses the "
                        "config's [proxy] seed, 0 unless set")
    p.add_argument("--out", type=_out, default=None, help="output folder (default runs/DATA/METHOD, tagged with a short hash of the options "
                                                "set away from their defaults, --budget and --seed included); the clustering is cached "
                                                "beside it in OUT/../stages, shared by the methods selected there")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    _log_arg(p)
    _distributed_args(p)
    select_defaults = _output_options(p, named="method")
    p.set_defaults(func=cmd_select, tagged=select_defaults)
    p = sub.add_parser("finetune", help="finetune a classifier on a selection, a random subset, or everything",
                       epilog=MALLOC_NOTE)
    _dataset_args(p, recorded="positional")
    p.add_argument("--model", default=FINETUNE.model, help="minilm, smollm2-135m, tiny-bert, or a local HF Llama folder")
    p.add_argument("--selection", default=None,
                   help="a selection.json from jaxsel select (default: none; without --random-fraction too, every train row)")
    p.add_argument("--random-fraction", type=_budget, default=None, help="train on a random subset this size (default: none)")
    p.add_argument("--epochs", type=_at_least(1), default=FINETUNE.epochs, help="passes over the training subset")
    p.add_argument("--min-steps", type=_at_least(0), default=FINETUNE.min_steps,
                   help="train at least this many optimizer steps: more epochs for a small subset (0: --epochs only)")
    p.add_argument("--batch-size", type=_at_least(1), default=FINETUNE.batch_size,
                   help="examples per micro-batch (an optimizer step takes batch size x grad accum)")
    p.add_argument("--grad-accum", type=_at_least(1), default=FINETUNE.grad_accum,
                   help="micro-batches summed into each optimizer step: larger steps in one micro-batch's memory")
    p.add_argument("--lr", type=float, default=FINETUNE.lr, help="peak AdamW learning rate (linear warmup over 10%% of the steps, then cosine decay)")
    p.add_argument("--max-length", type=_at_least(2), default=FINETUNE.max_length, help="tokens per text when finetuning")
    p.add_argument("--head", default=FINETUNE.head, choices=("verbalizer", "linear"),
                   help="decoder classification: the logit of each class name's first token, or a linear head")
    p.add_argument("--lora-rank", type=_at_least(0), default=FINETUNE.lora_rank,
                   help="decoders: train LoRA adapters of this rank only")
    p.add_argument("--length-buckets", default=FINETUNE.length_buckets, choices=LENGTH_BUCKETS,
                   help="padded lengths the train step is compiled for: all (each batch's bucket), one (the longest: "
                        "fewer compiles, more padding; a lone first finetune on CPU ~25%% faster), auto (all on CPU, "
                        "the fewest that pay for their compile on accelerators)")
    p.add_argument("--seed", type=_at_least(0), default=0,
                   help="seeds the initialisation, the shuffles and --random-fraction's subset")
    p.add_argument("--out", type=_out, default=None, help="output folder (default runs/DATA/finetune-MODEL-KIND: sel-SELECTIONFOLDER, rand or full; tagged like "
                                                "select's with the reading and finetuning options set away from their defaults and the selection file)")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint in --out")
    _log_arg(p)
    _distributed_args(p)
    # the reading options a selection records (defaults None here) against select's defaults, and finetune's own
    own = {k: v for k, v in _output_options(p, named="model").items() if k not in READ_OPTIONS}
    # and the selection file: exp1/strat/selection.json and exp2/strat/selection.json, or picks/a.json and
    # picks/b.json, had shared one folder (named by the selection's folder only)
    p.set_defaults(func=cmd_finetune, tagged={**{k: select_defaults[k] for k in READ_OPTIONS}, **own, "selection": None})
    p = sub.add_parser("export", help="write a selection's kept rows (or the rest) as JSONL, Parquet, CSV or Arrow")
    p.add_argument("selection", help="a selection.json from jaxsel select or jaxsel run")
    _dataset_args(p, recorded="option")
    p.add_argument("--format", default=None, choices=("jsonl", "parquet", "csv", "arrow"),
                   help="arrow: a datasets.save_to_disk folder (default: from --out's suffix, else jsonl)")
    p.add_argument("--out", type=_out, required=True, help="output file (a folder for arrow)")
    p.add_argument("--complement", action="store_true", help="write the rows NOT selected instead")
    p.add_argument("--no-source-columns", action="store_true",
                   help="leave out the source file's other columns (written by default; one named like a jaxsel column as user_NAME)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("run", help="the whole comparison from a config: select with every method, finetune, report",
                       epilog=MALLOC_NOTE)
    p.add_argument("--config", default="configs/quick", help="a TOML run config (configs/NAME finds configs/NAME.toml)")
    p.add_argument("--data", default=None,
                   help="replace the config's dataset: a built-in name, a file, or a hub name (default: the config's)")
    p.add_argument("--text-col", default=None, help="replace the config's [data] text_col (default: the config's)")
    p.add_argument("--label-col", default=None, help="replace the config's [data] label_col (default: the config's)")
    p.add_argument("--split-col", default=None, help="replace the config's [data] split_col, a train/validation/test "
                                                     "column; '' for none, a seeded split (default: the config's)")
    p.add_argument("--split-seed", type=_at_least(0), default=None,
                   help="seed of the stratified 80/10/10 split (default: the config's)")
    p.add_argument("--dedup", action="store_true", default=None, help="drop exact duplicate texts (default: the config's)")
    p.add_argument("--encoding", default=None, help="text encoding of a CSV/TSV/JSON file (default: UTF-8, UTF-16/32 by byte-order mark, else Windows-1252)")
    _label_args(p, overrides=" (default: the config's)")
    p.add_argument("--out", type=_out, default=None, help="run folder (default runs/CONFIG-NAME, with --data's name and a short hash of a data file's path "
                                                "and the reading options given); rerunning resumes it")
    _log_arg(p)
    _distributed_args(p)
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command (``argv``, default ``sys.argv[1:]``) and return its exit status: 0, 2 for a
    user mistake (one line on stderr), 130 after Ctrl-C. Leaves malloc as it is: the ``jaxsel``
    command sets it for ``run`` and ``finetune`` before this module is imported (``jaxsel.__main__``).
    A command that fails removes the empty output folders it created. Every command keeps its
    compiled programs in ``$JAXSEL_CACHE/xla`` (:func:`jaxsel.assets.enable_compilation_cache`).
    ``--help`` and ``--version`` return 0 and an argument mistake 2 (argparse's usage line said
    why), as after the command: a notebook's call gets the status, not ``SystemExit``. Each
    :class:`~jaxsel.errors.JaxselWarning` is printed as one line, "warning: " + its message."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse leaves this way, its lines printed
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    MADE.clear()
    # warnings as "warning: ..." lines (the cache's too); LOCKS: the output folders this command writes, released
    # when it ends
    with warnings_as_lines(), LOCKS:
        code = _dispatch(args)
    if code:
        _remove_empty_made()
    return code


def _dispatch(args) -> int:
    """``args.func(args)`` (in a distributed run, logging run, ...) and its exit status."""
    from jaxsel import assets
    try:
        if filter_action(assets.DAMAGED_PROGRAM, UserWarning, "jax._src.compiler") == "error":  # -W error
            # jax's warning of a damaged saved program is shown, not raised inside its compile: the hook repairs it
            warnings.filterwarnings("default", message=re.escape(assets.DAMAGED_PROGRAM), category=UserWarning)
        assets.enable_compilation_cache()  # every command's programs; library calls leave jax's config alone
        if getattr(args, "distributed", False) or getattr(args, "coordinator", None) or \
                getattr(args, "num_processes", None) or getattr(args, "process_id", None) is not None:
            from jaxsel import distributed
            distributed.initialize(args.coordinator, args.num_processes, args.process_id, args.join_timeout)
            if not distributed.primary():  # process 0 reports; the others only compute
                sys.stdout = open(os.devnull, "w", encoding="utf-8")
        if getattr(args, "log_dir", None) and args.command == "run":  # select and finetune open theirs (_start)
            from jaxsel import metrics
            with metrics.logging_to(args.log_dir):
                args.func(args)
        else:
            args.func(args)
    except (JaxselError, JaxselWarning) as e:  # a warning the filters made an error (-W error)
        say(f"jaxsel: error: {e}")
        return 2
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as e:
        # a location the user named cannot be written (read-only folder, a file where a folder goes)
        why = "a file is there, where a folder is needed" if isinstance(e, FileExistsError) else e.strerror
        say(f"jaxsel: error: cannot write {e.filename or 'the output'}: {why}")
        return 2
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG):
            raise
        say(f"jaxsel: error: cannot write {e.filename or 'the output'}: {e.strerror}")
        return 2
    except KeyboardInterrupt:
        say(interrupted())
        return 130
    except Exception as e:
        if not _joined():
            raise
        if _peer_failure(e):
            say(f"jaxsel: error: the multi-process run broke off ({str(e).splitlines()[0][:200]}): another process "
                f"probably ended; start every process again, with --resume")
        elif sys.stderr is not None:  # a fault of jaxsel: its traceback, then the exit without teardown (entry)
            traceback.print_exc()
        return 1
    return 0


def _joined() -> bool:
    """Whether this process started a multi-process join (:func:`jaxsel.distributed.joining`)."""
    return "jaxsel.distributed" in sys.modules and sys.modules["jaxsel.distributed"].joining()


def _peer_failure(e: Exception) -> bool:
    """Whether ``e`` is how a multi-process run's collective fails when a peer is gone: JAX's runtime
    error, or a ValueError naming gloo (``multihost_utils.process_allgather`` raises that one)."""
    import jax
    return isinstance(e, jax.errors.JaxRuntimeError) or "gloo" in str(e).lower()


class Interrupts:
    """The command's Ctrl-C (and SIGTERM) handling. As a SIGINT handler, the first Ctrl-C raises KeyboardInterrupt
    as usual and starts a ``grace`` seconds deadline; a second one or the deadline leaves at once
    (one line, exit 130). Python drops an exception raised inside a garbage-collector callback (jax
    runs one after collections) and reports it as "Exception ignored in ..." with a traceback: a
    Ctrl-C landing there was lost, and a run that ended within the deadline exited 0 (a new user's
    test: 2 of 3 interrupts of a PPO run). :meth:`unraisable` (``sys.unraisablehook``) leaves at
    once on such a dropped KeyboardInterrupt instead, and ``hit`` tells :func:`entry` that one came."""

    def __init__(self, grace: float = 10.0):
        self.grace, self.hit = grace, threading.Event()

    @staticmethod
    def leave() -> None:
        say(interrupted())
        os._exit(130)

    def __call__(self, signum, frame) -> None:
        if self.hit.is_set():
            return self.leave()
        self.hit.set()
        timer = threading.Timer(self.grace, self.leave)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    def unraisable(self, info) -> None:
        if issubclass(info.exc_type, KeyboardInterrupt):
            return self.leave()
        sys.__unraisablehook__(info)


class PipeSafe:
    """Standard output that a reader leaving the pipe early does not stop (``jaxsel select ... |
    head -1``, a pipe into a command that failed): the rest of the output goes to /dev/null and
    the command finishes its work and exits with its own status, instead of a BrokenPipeError
    traceback and exit 1 after the selection was written."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.stream.fileno())  # what the stream still buffers goes there too
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def entry() -> None:
    """The ``jaxsel`` command: :func:`main` under :class:`Interrupts`, then exit with its code.
    After Ctrl-C (130) it leaves without the interpreter's teardown: XLA may still be running the
    interrupted program on its threads, and tearing Python down under it crashed about one
    interrupt in ten (a segfault, exit 139); so does a failed multi-process run, whose JAX threads may
    still wait on the other processes (a peer gone: JAX aborted the process ~70 s later with its own
    trace). Every file jaxsel writes is renamed into place whole, so nothing half-written is left."""
    interrupts = Interrupts()
    signal.signal(signal.SIGINT, interrupts)
    signal.signal(signal.SIGTERM, interrupts)  # timeout, systemd, Kubernetes: the same line and cleanup
    sys.unraisablehook = interrupts.unraisable
    sys.stdout = PipeSafe(sys.stdout)
    code = main()
    if interrupts.hit.is_set() and code != 130:  # an interrupt the run did not stop for still ends it as one
        interrupts.leave()
    if code == 0 and _joined() and not sys.modules["jaxsel.distributed"].leave():
        log.info("another process of the run did not reach its end (this one's work is done and written)")
        _exit_now(0)  # the end-of-run barrier would wait for the missing process, then JAX would abort this one
    if code == 130 or (code and _joined()):  # a failed multi-process run: JAX's threads may wait on its peers
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """Flush the output and end the process without the interpreter's teardown (:func:`entry`)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # none where the process started with it closed (errors.say)
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # python -m jaxsel.cli, as before jaxsel.__main__: the command without its malloc setting
    entry()
