"""Pre-flight: checking a run's input before anything expensive happens.

Every check raises ``ValueError`` with one line that says what is wrong and how to fix it;
the command line prints it as ``error: ...`` and exits with status 2.

- :func:`check_pipeline` runs before the pipeline creates its output directory or trains a
  teacher: the output directory can be written (:func:`check_output`), teacher names (known,
  general recommenders, not listed twice), unknown config keys
  (:func:`recbole_hetcomp.keys.check_keys`), milestones, the ensemble's settings, and, on the
  loaded split, ``trajectory_top_n`` (N) and the student's ``hetcomp_k`` (K) and ``dkc_k``
  against the catalogue; then every stored teacher the run will re-use is verified (checksums,
  dataset, split, format version). It returns a :class:`Plan` naming where each teacher will
  be stored (the CLI counts them when a run is interrupted) and holding the loaded split.
- The data's own checks (atomic files, an empty split, users left unevaluated) are in
  :mod:`recbole_hetcomp.data.checks`; ``load_data`` runs them, and :func:`check_pipeline` logs
  the unevaluated users once.
"""

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from recbole_hetcomp.config import make_config, recbole_model_yaml, scoped_args, split_global_args, without_keys
from recbole_hetcomp.data.checks import warn_uncovered
from recbole_hetcomp.distill.ensemble import importance, importance_from_config, teacher_weight_vector
from recbole_hetcomp.keys import check_keys, check_teacher_names
from recbole_hetcomp.model.hetcomp import HetComp
from recbole_hetcomp.run.fusion import check_fusion_keys, fit_settings, within_lists
from recbole_hetcomp.run.teachers import check_teacher
from recbole_hetcomp.run.training import load_data, split_settings_differ
from recbole_hetcomp.schema import check_values
from recbole_hetcomp.settings import positive_int
from recbole_hetcomp.trajectories.recorder import check_milestones
from recbole_hetcomp.trajectories.store import TrajectoryStore, teacher_key

logger = logging.getLogger("recbole_hetcomp")

#: The last :class:`Plan` of this process (read by the command line when a run is interrupted).
last_plan = None


@dataclass
class Plan:
    """What a checked pipeline run will do: its teachers and the store directory of each."""

    dataset: str
    teachers: list
    store_paths: dict = field(default_factory=dict)  # teacher -> Path of its finished store directory
    protocol: object = None  # the ensemble's Data (split and loaders), loaded by the check: reuse it

    def stored(self):
        """Teachers whose trajectory is complete in the store now, in run order."""
        return [t for t in self.teachers if t in self.store_paths and (self.store_paths[t] / "meta.json").is_file()]



def catalogue_room(train_dataset):
    """(items, most training items of one user, unobserved items left to that user to rank)."""
    items = train_dataset.item_num - 1  # RecBole's id 0 is padding
    max_train = int(np.diff(train_dataset.inter_matrix(form="csr").indptr).max())
    return items, max_train, items - max_train


def no_kd_baseline(student_config):
    """(model, row label, config overrides) of the student's architecture trained without a teacher, at the
    student's size: BPR-trained MF for the MF student, else the student's model with its own loss and the
    student's values of its architecture keys (those of its RecBole yaml: LightGCN's ``n_layers``, ...)."""
    d, student = student_config["embedding_size"], student_config["student"]
    if student == "MF":
        return "BPR", f"MF w/o KD (BPR, d={d})", {"embedding_size": d}
    path = recbole_model_yaml(student)
    keys = set(yaml.safe_load(path.read_text()) or {}) if path.is_file() else set()
    over = {k: student_config[k] for k in keys if k in student_config and "neg_sample" not in k}
    return student, f"{student} w/o KD (d={d})", {**over, "embedding_size": d}


def check_student(config, train_dataset, top_n):
    """``hetcomp_k`` (K), ``dkc_k`` and ``hetcomp_p`` fit the catalogue and the teachers' N."""
    items, max_train, room = catalogue_room(train_dataset)
    where = f"this dataset has {items} items and a user with {max_train} training items leaves {room} to rank"
    positive_int(config, "hetcomp_p")
    for key in ("hetcomp_k", "dkc_k"):
        value = positive_int(config, key)
        if value > room:
            raise ValueError(f"{key}={value} is larger than the catalogue allows ({where}): "
                             f"set --{key} (and --trajectory_top_n) to at most {room}")
        if value > top_n:
            raise ValueError(f"{key}={value} is larger than trajectory_top_n={top_n}, the length of the teachers' "
                             f"lists it is built from: lower --{key} or raise --trajectory_top_n to at least "
                             f"{value} (at most {room} here)")



def check_one_ensemble(configs, teachers, student, protocol):
    """What every model of the run must share, compared across their configs before anything trains (each would
    otherwise fail after the teachers): one split, lists of one length, the student's milestones recorded by every
    teacher (of weight above 0)."""
    base = configs["HetCompEnsemble"]
    for name, config in configs.items():
        if name == "HetComp" and not student:
            continue
        differ = split_settings_differ(config, base)
        if not differ:
            continue
        with _quiet_recbole_info():
            other = load_data(config)
        if other.fingerprint != protocol.fingerprint:
            settings = ", ".join(f"{k}={config[k]} (the run's: {base[k]})" for k in differ)
            raise ValueError(f"{name} would train on another split than the run's: {settings}; every model of a run "
                             f"is trained and evaluated on one split: set {', '.join(differ)} for the whole run, "
                             "without a model scope")
    lengths = {name: configs[name]["trajectory_top_n"] for name in teachers}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"trajectory_top_n differs between teachers ({', '.join(f'{n} {v}' for n, v in lengths.items())})"
                         ": the ensemble fuses lists of one length; set --trajectory_top_n once, without a model scope")
    weights = teacher_weight_vector(teachers, base["teacher_weights"])
    if student:  # a teacher the user weighs 0 never reaches the student
        wanted = [float(f) for f in configs["HetComp"]["trajectory_milestones"]]
        for name in (n for n, w in zip(teachers, weights) if float(w) > 0):
            recorded = [float(f) for f in configs[name]["trajectory_milestones"]]
            missing = [f for f in wanted if f not in recorded]
            if missing:
                raise ValueError(f"the student learns at trajectory_milestones {wanted}, but teacher {name} records "
                                 f"{recorded} (not {missing}): set --trajectory_milestones for the whole run, or give "
                                 "the student a subset of every teacher's")


def warn_short_lists(config, top_n):
    """A warning where a reported cut-off (``topk``) ranks more items than the teachers' lists hold: the ensembles
    score items in no list 0, so their metrics at that cut-off also count such items, in no order the teachers
    gave. Returns the cut-offs concerned."""
    topk = config["topk"]
    over = sorted(k for k in (topk if isinstance(topk, (list, tuple)) else [topk]) if k > top_n)
    if over:
        logger.warning(f"trajectory_top_n={top_n} is below topk {', '.join(map(str, over))}: the ensembles rank only "
                       f"the items their teachers list, so their metrics at {', '.join(map(str, over))} also count "
                       f"items in no list, in no order the teachers gave; raise --trajectory_top_n to at least "
                       f"{over[-1]} for those to mean something")
    return over


def check_output(output):
    """``output`` can be created and written, judged without creating anything (the pipeline's
    ``prepare_output`` then creates it and tries a real write)."""
    path = Path(output).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    why = None
    if not probe.is_dir():
        why = f"{probe} is not a directory"
    elif not os.access(probe, os.W_OK | os.X_OK):
        why = f"no permission to write in {probe}"
    if why:
        raise ValueError(f"output directory {output} is not writable ({why}): choose another with --output")


class _DropRecBoleInfo(logging.Filter):
    def filter(self, record):
        return not (record.name == "root" and record.levelno <= logging.INFO)


@contextlib.contextmanager
def _quiet_recbole_info():
    """Hide RecBole's own INFO lines (it logs on the root logger); ours, such as a MovieLens
    conversion, still show."""
    handlers, drop = list(logging.getLogger().handlers), _DropRecBoleInfo()
    for handler in handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop)


def check_pipeline(dataset, teachers=None, config_files=None, config_dict=None, cmd_args=None, student=True,
                   output=None, rebuild=False):
    """Check a pipeline run before anything is written or trained; returns its :class:`Plan`.

    Checks that ``output`` can be written, builds the run's configs (ensemble, teachers,
    student, the MF baseline), checks names, keys and values, loads the split once
    (converting a MovieLens archive if needed), checks N and K against its catalogue and,
    unless ``rebuild``, verifies every stored teacher the run will re-use (a damaged or
    foreign store is named now, not after the teachers before it have trained).
    """
    global last_plan

    if output is not None:
        check_output(output)
    global_args = split_global_args(cmd_args)
    base = make_config("HetCompEnsemble", dataset, config_files, config_dict, global_args)
    teachers = list(teachers or base["teachers"] or [])
    check_teacher_names(teachers)
    run_models = ["HetComp", *teachers]
    configs = {"HetCompEnsemble": base}
    for name in teachers:
        configs[name] = make_config(name, dataset, config_files, config_dict, scoped_args(cmd_args, name, run_models))
    configs["HetComp"] = make_config("HetComp", dataset, config_files, config_dict,
                                     scoped_args(cmd_args, "HetComp", run_models))
    if student:  # the baseline: the student's architecture without a teacher, the global arguments
        model, label, over = no_kd_baseline(configs["HetComp"])
        configs[label] = make_config(model, dataset, config_files, {**(config_dict or {}), **over},
                                     without_keys(global_args, over))
    check_keys(configs, config_files, cmd_args)
    for config in configs.values():
        check_values(config)  # every key's type and range (properties/ yaml), and the rules across keys
    for name in teachers:
        check_milestones(configs[name]["trajectory_milestones"])
    teacher_weight_vector(teachers, base["teacher_weights"])
    importance(torch.zeros(1), **importance_from_config(base))
    check_fusion_keys(base, configs["HetComp"] if student else None)
    if not isinstance(base["ensemble_fit"], bool):
        raise ValueError(f"ensemble_fit={base['ensemble_fit']!r} must be True or False")
    if base["ensemble_fit"]:
        settings = fit_settings(base)  # the metric it maximises, the method, the grid, the steps

    with _quiet_recbole_info():  # RecBole's loader reports the split at INFO: the run does that later
        protocol = load_data(base)
    warn_uncovered(protocol)
    for name in teachers:
        check_teacher(configs[name], protocol.train_dataset)
    check_one_ensemble(configs, teachers, student, protocol)
    top_n = min(configs[name]["trajectory_top_n"] for name in teachers)
    warn_short_lists(base, top_n)
    if base["ensemble_fit"]:
        within_lists(settings, top_n)  # a fit metric past the lists' length: said now, applied by the fit
    if student:
        check_student(configs["HetComp"], protocol.train_dataset, top_n)
        if configs["HetComp"]["student"] != "MF":  # it scores the whole catalogue, with a gradient: build it once
            HetComp(configs["HetComp"], protocol.train_dataset)
    store = TrajectoryStore(base["trajectory_store"])
    keys = {name: teacher_key(configs[name], protocol.fingerprint) for name in teachers}
    paths = {name: store.path(dataset, configs[name]["model"], keys[name]) for name in teachers}
    for name in teachers:
        if not rebuild and store.exists(dataset, configs[name]["model"], keys[name]):
            store.load(dataset, configs[name]["model"], keys[name], protocol.fingerprint)  # StoreError names it
    last_plan = Plan(dataset, [configs[n]["model"] for n in teachers],
                     {configs[n]["model"]: p for n, p in paths.items()}, protocol)
    return last_plan
