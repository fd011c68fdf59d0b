"""The pipeline behind ``run_recbole_hetcomp.py``.

Teachers with trajectories (trained or re-used), their ensemble, then the HetComp student,
the same-size MF trained without a teacher, and optionally the ablations and the ranking-KD
baselines (the same student learning the same ensemble), all on one split and evaluated by
RecBole's evaluator.
"""

import contextlib
import logging
import tempfile
import time
from pathlib import Path

from recbole.utils import init_logger

from recbole_hetcomp.config import make_config, scoped_args, split_global_args, without_keys
from recbole_hetcomp.keys import check_keys
from recbole_hetcomp.model import HetCompEnsemble
from recbole_hetcomp.run import training
from recbole_hetcomp.run.fusion import FUSION_KEYS, choose_fusion, config_fusion, fit_summary, given_label
from recbole_hetcomp.run.plots import write_plots
from recbole_hetcomp.run.preflight import check_output, check_pipeline, no_kd_baseline
from recbole_hetcomp.run.results import write_results
from recbole_hetcomp.run.teachers import fit_teacher
from recbole_hetcomp.run.training import evaluate_model, load_data, shared_split, train_model, training_note
from recbole_hetcomp.schema import check_values
from recbole_hetcomp.trajectories.recorder import check_milestones
from recbole_hetcomp.trajectories.store import TrajectoryStore

logger = logging.getLogger("recbole_hetcomp")

# (row name, config overrides) of the ablations of HetComp.
ABLATIONS = (
    ("HetComp w/o DKC (ensemble KD)", {"dkc": False}),
    ("HetComp w/o AKT", {"akt": False}),
)

# (row name, config overrides) of the ranking-KD baselines: the same MF student and target, no curriculum.
KD_BASELINES = (
    ("RD (KD of the ensemble)", {"kd_method": "rd"}),
    ("RRD (KD of the ensemble)", {"kd_method": "rrd"}),
    ("DCD (KD of the ensemble)", {"kd_method": "dcd"}),
    ("CL-DRD (KD of the ensemble)", {"kd_method": "cldrd"}),
)


class Progress:
    """Logs ``[i/n] stage (elapsed)`` when a stage starts and its duration when it ends; keeps each stage's
    time for the end of the table (:meth:`markdown`)."""

    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.time()
        self.stages = []

    def begin(self, label):
        self.done += 1
        self.label, self.stage_start = label, time.time()
        logger.info(f"[{self.done}/{self.total}] {label} ({_clock(time.time() - self.start)} elapsed)")

    def end(self, note=""):
        seconds = time.time() - self.stage_start
        self.stages.append({"stage": self.label + note, "s": round(seconds, 1)})
        logger.info(f"[{self.done}/{self.total}] done in {_clock(seconds)}{note}")

    def total_s(self):
        return round(time.time() - self.start, 1)

    def markdown(self):
        lines = ["| stage | wall time |", "|---|---|"]
        lines += [f"| {s['stage']} | {_clock(s['s'])} |" for s in self.stages]
        return "\n".join(lines + [f"| **total** | **{_clock(self.total_s())}** |"])


def _clock(seconds):
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def prepare_output(output):
    """Create ``output`` and check it can be written, before any training is spent."""
    output = Path(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
        (output / "checkpoints").mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output):
            pass
    except OSError as e:
        raise ValueError(f"output directory {output} is not writable ({e.strerror or e}): "
                         "choose another with --output") from None
    return output


def teacher_row(traj):
    meta = traj.meta
    note = training_note(meta.get("valid_curve"), meta.get("epochs"), meta.get("config", {}))
    return {"name": traj.teacher, "kind": "teacher", "params": meta.get("params", 0),
            "test": meta.get("test", {}), "valid": meta.get("valid", {}),
            "train_s": meta.get("train_s"), "epochs": meta.get("epochs"), "reused": meta.get("reused", False),
            "infer_ms_per_1k_users": meta.get("infer_ms_per_1k_users"), "infer_ms_from": meta.get("infer_ms_from"),
            "milestone_epochs": meta.get("milestone_epochs"),
            **({"training_note": note} if note else {})}


def training_notes(rows):
    """The footer's lines for the rows whose training ended in a way worth a line."""
    return [f"- {r['name']}: {r['training_note']}." for r in rows if r.get("training_note")]


def build_teachers(dataset, teachers, config_files=None, config_dict=None, cmd_args=None, rebuild=False,
                   progress=None, parallel=None):
    """Train (or re-use from the store) every teacher with its trajectory; returns (rows, trajectories).

    ``parallel``, a :class:`recbole_hetcomp.distributed.parallel.RayTeachers`, trains them as Ray tasks
    instead of one after another; either way they land in the same store.
    """
    base = make_config("HetCompEnsemble", dataset, config_files, config_dict, split_global_args(cmd_args))
    known = ["HetComp", *teachers]
    args_for = {m: scoped_args(cmd_args, m, known) for m in known}
    store = TrajectoryStore(base["trajectory_store"])
    if parallel is not None:
        trajectories = parallel.fit(dataset, teachers, config_files, config_dict, args_for, store.root, rebuild)
        return [teacher_row(t) for t in trajectories], trajectories
    rows, trajectories = [], []
    for name in teachers:
        if progress:
            progress.begin(f"teacher {name}")
        data = load_data(make_config(name, dataset, config_files, config_dict, args_for[name]))
        traj = fit_teacher(data, store, rebuild=rebuild)
        trajectories.append(traj)
        rows.append(teacher_row(traj))
        if progress:
            progress.end(" (re-used from the store)" if traj.meta.get("reused") else "")
    return rows, trajectories


def check_same_split(trajectories, fingerprint, what):
    for traj in trajectories:
        if traj.meta["split_fingerprint"] != fingerprint:
            raise RuntimeError(f"teacher {traj.teacher} was trained on another split than the {what}'s; "
                               "the split settings (seed, eval_args, dataset filters) must not differ")


def student_trajectories(data, trajectories, what="student"):
    """The teachers' trajectories as ``data.config`` (a student's) asks: checked to come from its
    split, at its ``trajectory_milestones`` (a subset of the recorded ones, e.g. a tuning trial's)."""
    check_same_split(trajectories, data.fingerprint, what)
    fractions = check_milestones(data.config["trajectory_milestones"])
    return [t if [float(f) for f in t.meta["milestones"]] == fractions else t.at_milestones(fractions)
            for t in trajectories]


def train_student(dataset, trajectories, workdir, config_files=None, config_dict=None, hetcomp_args=None,
                  save_to=None, fusion=None):
    """Train one HetComp student (``config_dict`` holds an ablation's overrides) on the teachers'
    ``trajectories``, checked to come from its split; returns (row, data). ``fusion``, a
    :class:`~recbole_hetcomp.run.fusion.RunFusion`, is the ensemble it learns (its teachers of weight
    above 0, with their weights and importance); by default the config's."""
    if fusion is not None:  # the run's fusion wins: it already holds what the user set (of the teachers it keeps)
        config_dict = {**(config_dict or {}), **fusion.config(trajectories)}
        hetcomp_args = without_keys(hetcomp_args, FUSION_KEYS)
        trajectories = fusion.active(trajectories)
    data = load_data(make_config("HetComp", dataset, config_files, config_dict, hetcomp_args))
    _, row = train_model(data, workdir, model_kwargs={"trajectories": student_trajectories(data, trajectories)},
                         save_to=save_to)
    if fusion is not None:
        row.update(ensemble=fusion.label, fusion=fusion.fusion.describe())
    return row, data


def ensemble_row(base, data, trajectories, teacher_rows, fusion, label):
    """Evaluate the ensemble of ``trajectories`` under ``fusion`` (a
    :class:`~recbole_hetcomp.distill.fit.Fusion`): its row. Teachers of weight 0 are left out of it,
    of its parameters and of its inference time (the ensemble runs only the others, then fuses)."""
    active = fusion.active(trajectories)
    ensemble = HetCompEnsemble(base, data.train_dataset, trajectories=active, fusion=fusion).to(base["device"])
    result = evaluate_model(ensemble, data, timing=True)
    by_name = {r["name"]: r for r in teacher_rows}
    teacher_ms = [by_name[t.teacher]["infer_ms_per_1k_users"] for t in active]
    infer = None if None in teacher_ms else result["infer_ms_per_1k_users"] + sum(teacher_ms)  # unknown if a
    # teacher's store predates timing
    stored = [t.teacher for t in active if by_name[t.teacher].get("infer_ms_from") == "the store"]
    return {"name": f"Ensemble ({label})", "kind": "ensemble", "teachers": [t.teacher for t in active],
            "fusion": fusion.as_row(),
            "params": sum(by_name[t.teacher]["params"] for t in active), "test": result["test"],
            "valid": result["valid"], "infer_ms_per_1k_users": infer,
            "infer_ms_from": "this run" + (f", and the store for {', '.join(stored)}" if stored else ""),
            "fusion_ms_per_1k_users": result["infer_ms_per_1k_users"]}


def run_pipeline(dataset, teachers=None, config_files=None, config_dict=None, cmd_args=None,
                 output=None, rebuild=False, student=True, ablations=False, teacher_runner=None,
                 refit_ensemble=False, kd_baselines=False):
    """Teachers, ensemble and (by default) student and MF baseline; returns (rows, table).

    With ``ensemble_fit`` (the default) the fusion is fitted on validation
    (:func:`~recbole_hetcomp.run.fusion.choose_fusion`, re-used from the store unless
    ``refit_ensemble``): the table then has the ensemble of the config's fusion and the fitted
    one, and the students learn the fitted one.

    ``teacher_runner(base_config)``, when given, returns ``(runner, session)``: the teachers are
    then trained by ``runner.fit(...)`` inside the context manager ``session`` instead of one
    after another here. :func:`recbole_hetcomp.distributed.parallel.ray_teacher_runner` makes one
    that trains them as Ray tasks (this layer never imports Ray)."""
    with shared_split():  # the dataset and split are built once and shared by every model of the run
        return _run_pipeline(dataset, teachers, config_files, config_dict, cmd_args, output, rebuild, student,
                             ablations, teacher_runner, refit_ensemble, kd_baselines)


def _run_pipeline(dataset, teachers, config_files, config_dict, cmd_args, output, rebuild, student, ablations,
                  teacher_runner, refit_ensemble, kd_baselines):
    builds_before = training.builds
    global_args = split_global_args(cmd_args)
    base = make_config("HetCompEnsemble", dataset, config_files, config_dict, global_args)
    init_logger(base)
    teachers = list(teachers or base["teachers"])
    args_for = {"HetComp": scoped_args(cmd_args, "HetComp", ["HetComp", *teachers])}
    output = output or Path("results") / dataset
    plan = check_pipeline(dataset, teachers, config_files, config_dict, cmd_args, student=student, output=output,
                          rebuild=rebuild)
    output = prepare_output(output)  # only now is anything written
    workdir = output / "checkpoints"
    base["checkpoint_dir"] = plan.protocol.config["checkpoint_dir"] = str(workdir)  # not ./saved (the ensemble's
    # evaluation goes through RecBole's Trainer, which creates its config's checkpoint_dir)

    extra_students = [(label, "ablation", over) for label, over in ABLATIONS if ablations] + [
        (label, "kd baseline", over) for label, over in KD_BASELINES if kd_baselines]
    n_students = (1 + len(extra_students) + 1) if student else 0
    ray_teachers, session = None, contextlib.nullcontext()
    if teacher_runner is not None:
        ray_teachers, session = teacher_runner(base)
    progress = Progress((1 if ray_teachers else len(teachers)) + 1 + n_students)
    if ray_teachers:
        progress.begin(f"teachers {'+'.join(teachers)} as Ray tasks")
    with session:
        rows, trajectories = build_teachers(dataset, teachers, config_files, config_dict, cmd_args, rebuild,
                                            progress=progress, parallel=ray_teachers)
    if ray_teachers:
        progress.end()

    progress.begin("ensemble of " + "+".join(teachers))
    protocol = plan.protocol  # the split the check loaded from the same configuration
    check_same_split(trajectories, protocol.fingerprint, "ensemble evaluation")
    teacher_rows = list(rows)
    given = config_fusion(base, [t.teacher for t in trajectories])
    rows.append(ensemble_row(base, protocol, trajectories, teacher_rows, given, given_label(given)))
    fusion = choose_fusion(base, protocol, trajectories, TrajectoryStore(base["trajectory_store"]),
                           refit=refit_ensemble)
    if fusion.fitted:
        row = ensemble_row(base, protocol, trajectories, teacher_rows, fusion.fusion, fusion.label)
        row["fit"] = {k: fusion.record.get(k) for k in ("valid_score", "equal_weights_score", "best_teacher",
                                                         "held_out", "fit_s", "reused", "settings")}
        rows.append(row)
    progress.end()

    if student:
        for label, kind, over in [("HetComp", "student", {}), *extra_students]:
            progress.begin(label)
            save_to = output / "HetComp.pth" if kind == "student" else None
            row, data = train_student(dataset, trajectories, workdir, config_files, {**(config_dict or {}), **over},
                                      without_keys(args_for["HetComp"], over), save_to=save_to, fusion=fusion)
            row.update(name=label, kind=kind)
            rows.append(row)
            progress.end()
            if kind == "student":
                baseline = no_kd_baseline(data.config)
        model, name, over = baseline
        progress.begin(f"baseline: {name}")
        data = load_data(make_config(model, dataset, config_files, {**(config_dict or {}), **over},
                                     without_keys(global_args, over)))
        _, row = train_model(data, workdir)
        row.update(name=name, kind="baseline")
        rows.append(row)
        progress.end()
    plots = write_plots(output, rows)
    extra = {"split_fingerprint": protocol.fingerprint, "plots": plots}
    if fusion.fitted:
        extra["ensemble_fit"] = fusion.record
    extra.update(stages=progress.stages, total_s=progress.total_s(), dataset_builds=training.builds - builds_before)
    notes = [f"- Ensemble ({given_label(given)}): {given.describe()}."]
    if fusion.fitted:
        notes.append(f"- Ensemble (fitted on validation): {fit_summary(fusion.record)}.")
    if student:
        notes.append(f"- The students learn the ensemble {fusion.label}.")
    notes += training_notes(rows)
    table = write_results(output, dataset, rows, extra=extra, footer="\n".join(notes) + "\n\n" + progress.markdown())
    return rows, table


def run_baseline(model, dataset, config_files=None, config_dict=None, cmd_args=None, output=None):
    """Train ``model`` alone on the same split and protocol as the pipeline; returns (rows, table)."""
    config = make_config(model, dataset, config_files, config_dict, cmd_args)
    init_logger(config)
    if config["model"] in ("HetComp", "HetCompEnsemble"):
        raise ValueError(f"--model {model} needs the teachers: run without --model")
    output = output or Path("results") / dataset
    check_output(output)
    check_keys({config["model"]: config}, config_files, cmd_args)
    check_values(config)
    data = load_data(config)
    output = prepare_output(output)
    workdir = output / "checkpoints"
    _, row = train_model(data, workdir, save_to=output / f"{config['model']}.pth")
    rows = [row]
    return rows, write_results(output, dataset, rows, extra={"split_fingerprint": data.fingerprint},
                               footer="\n".join(training_notes(rows)) or None)
