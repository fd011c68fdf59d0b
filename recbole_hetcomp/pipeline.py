"""The pipeline behind ``run_recbole_hetcomp.py``.

Teachers with trajectories (trained or re-used), their ensemble, then the HetComp student,
the same-size MF trained without a teacher, and optionally the ablations, all on one split
and evaluated by RecBole's evaluator.
"""

import logging
import tempfile
import time
from pathlib import Path

from recbole.utils import init_logger, init_seed

from recbole_hetcomp.inference import full_ranking_ms_per_1k_users, save_model
from recbole_hetcomp.model import HetCompEnsemble
from recbole_hetcomp.plots import write_plots
from recbole_hetcomp.results import write_results
from recbole_hetcomp.store import TrajectoryStore
from recbole_hetcomp.teachers import evaluate_model, fit_teacher, load_data, make_config
from recbole_hetcomp.trainer import CheckpointMixin
from recbole_hetcomp.utils import count_parameters, get_model, get_trainer

logger = logging.getLogger("recbole_hetcomp")

# (row name, config overrides) of the ablations of HetComp.
ABLATIONS = (
    ("HetComp w/o DKC (ensemble KD)", {"dkc": False}),
    ("HetComp w/o AKT", {"akt": False}),
)


class Progress:
    """Logs ``[i/n] stage (elapsed)`` when a stage starts and its duration when it ends."""

    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.time()

    def begin(self, label):
        self.done += 1
        self.stage_start = time.time()
        logger.info(f"[{self.done}/{self.total}] {label} ({_clock(time.time() - self.start)} elapsed)")

    def end(self, note=""):
        logger.info(f"[{self.done}/{self.total}] done in {_clock(time.time() - self.stage_start)}{note}")


def _clock(seconds):
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def scoped_args(cmd_args, model, known):
    """The ``--key=value`` arguments that reach ``model``: the global ones, plus the
    ``--<Model>.key=value`` ones addressed to it (prefix removed). A scope that names no
    model of the run is an error, so a typo never passes silently."""
    out = []
    for arg in cmd_args or []:
        key = arg[2:].split("=", 1)[0]
        if "." not in key:
            out.append(arg)
            continue
        scope, name = key.split(".", 1)
        if scope not in known:
            raise ValueError(f"'{arg}' is addressed to '{scope}', which is not a model of this run "
                             f"({', '.join(known)})")
        if scope == model:
            out.append(f"--{name}={arg.split('=', 1)[1]}")
    return out


def teacher_row(traj):
    meta = traj.meta
    return {"name": traj.teacher, "kind": "teacher", "params": meta.get("params", 0),
            "test": meta.get("test", {}), "valid": meta.get("valid", {}),
            "train_s": meta.get("train_s"), "reused": meta.get("reused", False),
            "infer_ms_per_1k_users": meta.get("infer_ms_per_1k_users"),
            "milestone_epochs": meta.get("milestone_epochs")}


def fit_model(data, workdir, trajectories=None, save_to=None):
    """Train ``data.config['model']`` under RecBole's protocol; returns (trainer, row).

    HetComp gets the teachers' ``trajectories`` and its own trainer; any other model trains
    with the trainer RecBole would pick. Checkpoints go to a private directory in ``workdir``;
    the best one is copied to ``save_to`` if given (reload it with
    :func:`recbole_hetcomp.inference.load_data_and_model`).
    """
    config, name = data.config, data.config["model"]
    config["checkpoint_dir"] = tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_cls = get_model(name)
    kwargs = {"trajectories": trajectories} if name == "HetComp" else {}
    model = model_cls(config, data.train_dataset, **kwargs).to(config["device"])
    trainer_cls = get_trainer(config["MODEL_TYPE"], name)
    if not issubclass(trainer_cls, CheckpointMixin):
        trainer_cls = type(f"Checkpointed{trainer_cls.__name__}", (CheckpointMixin, trainer_cls), {})
    trainer = trainer_cls(config, model)
    curve = {"epochs": [], "scores": []}

    def record(epoch, score):
        curve["epochs"].append(int(epoch))
        curve["scores"].append(float(score))

    start = time.time()
    _, best_valid = trainer.fit(data.train, data.valid, saved=True, show_progress=config["show_progress"],
                                callback_fn=record)
    train_s = time.time() - start
    test = trainer.evaluate(data.test, load_best_model=True)
    epochs = (max(trainer.train_loss_dict) + 1) if trainer.train_loss_dict else 0
    row = {"name": name, "kind": "baseline", "params": count_parameters(model), "test": dict(test),
           "valid": dict(best_valid or {}), "train_s": train_s, "epochs": epochs,
           "s_per_epoch": train_s / max(epochs, 1), "valid_metric": config["valid_metric"],
           "valid_curve": curve,
           "infer_ms_per_1k_users": full_ranking_ms_per_1k_users(trainer, data.train_dataset)}
    if save_to is not None:
        row["model_file"] = str(save_model(trainer, save_to))
    if hasattr(trainer, "curriculum_summary"):
        row["curriculum"] = trainer.curriculum_summary()
    return trainer, row


def run_pipeline(dataset, teachers=None, config_files=None, config_dict=None, cmd_args=None,
                 output=None, rebuild=False, student=True, ablations=False):
    """Teachers, ensemble and (by default) student and MF baseline; returns (rows, table)."""
    global_args = [a for a in cmd_args or [] if "." not in a[2:].split("=", 1)[0]]
    base = make_config("HetCompEnsemble", dataset, config_files, config_dict, global_args)
    init_logger(base)
    teachers = list(teachers or base["teachers"])
    known = ["HetComp", *teachers]
    args_for = {m: scoped_args(cmd_args, m, known) for m in known}
    store = TrajectoryStore(base["trajectory_store"])
    output = Path(output or Path("results") / dataset)
    workdir = output / "checkpoints"
    workdir.mkdir(parents=True, exist_ok=True)
    base["checkpoint_dir"] = str(workdir)

    n_students = (1 + (len(ABLATIONS) if ablations else 0) + 1) if student else 0
    progress = Progress(len(teachers) + 1 + n_students)
    rows, trajectories = [], []
    for name in teachers:
        progress.begin(f"teacher {name}")
        data = load_data(make_config(name, dataset, config_files, config_dict, args_for[name]))
        traj = fit_teacher(data, store, rebuild=rebuild)
        trajectories.append(traj)
        rows.append(teacher_row(traj))
        progress.end(" (re-used from the store)" if traj.meta.get("reused") else "")

    progress.begin("ensemble of " + "+".join(teachers))
    protocol = load_data(base)
    for traj in trajectories:
        if traj.meta["split_fingerprint"] != protocol.fingerprint:
            raise RuntimeError(f"teacher {traj.teacher} was trained on another split than the ensemble's "
                               "evaluation; the split settings must not differ between teachers")
    ensemble = HetCompEnsemble(base, protocol.train_dataset, trajectories=trajectories)
    result = evaluate_model(ensemble, protocol, timing=True)
    # At inference the ensemble runs every teacher, then fuses their lists (unknown if a
    # teacher's store predates timing).
    teacher_ms = [r["infer_ms_per_1k_users"] for r in rows]
    infer = None if None in teacher_ms else result["infer_ms_per_1k_users"] + sum(teacher_ms)
    rows.append({"name": "Ensemble(" + "+".join(teachers) + ")", "kind": "ensemble",
                 "params": sum(r["params"] for r in rows), "test": result["test"], "valid": result["valid"],
                 "infer_ms_per_1k_users": infer, "fusion_ms_per_1k_users": result["infer_ms_per_1k_users"]})
    progress.end()

    if student:
        runs = [("HetComp", "student", {})]
        if ablations:
            runs += [(label, "ablation", over) for label, over in ABLATIONS]
        for label, kind, over in runs:
            progress.begin(label)
            data = load_data(make_config("HetComp", dataset, config_files, {**(config_dict or {}), **over},
                                         args_for["HetComp"]))
            save_to = output / "HetComp.pth" if kind == "student" else None
            _, row = fit_model(data, workdir, trajectories, save_to=save_to)
            row.update(name=label, kind=kind)
            rows.append(row)
            progress.end()
            if kind == "student":
                student_dim = data.config["embedding_size"]
        progress.begin(f"baseline: MF without a teacher (BPR, embedding_size={student_dim})")
        data = load_data(make_config("BPR", dataset, config_files,
                                     {**(config_dict or {}), "embedding_size": student_dim}, global_args))
        _, row = fit_model(data, workdir)
        row.update(name=f"MF w/o KD (BPR, d={student_dim})", kind="baseline")
        rows.append(row)
        progress.end()
    plots = write_plots(output, rows)
    table = write_results(output, dataset, rows, extra={"split_fingerprint": protocol.fingerprint, "plots": plots})
    return rows, table


def run_baseline(model, dataset, config_files=None, config_dict=None, cmd_args=None, output=None):
    """Train ``model`` alone on the same split and protocol as the pipeline; returns (rows, table)."""
    config = make_config(model, dataset, config_files, config_dict, cmd_args)
    init_logger(config)
    if config["model"] in ("HetComp", "HetCompEnsemble"):
        raise ValueError(f"--model {model} needs the teachers: run without --model")
    output = Path(output or Path("results") / dataset)
    workdir = output / "checkpoints"
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_data(config)
    _, row = fit_model(data, workdir, save_to=output / f"{config['model']}.pth")
    rows = [row]
    return rows, write_results(output, dataset, rows, extra={"split_fingerprint": data.fingerprint})
