"""The pipeline behind ``run_recbole_hetcomp.py``: teachers with trajectories, then the ensemble."""

import logging
import time
from pathlib import Path

from recbole.utils import init_logger

from recbole_hetcomp.model import HetCompEnsemble
from recbole_hetcomp.results import write_results
from recbole_hetcomp.store import TrajectoryStore
from recbole_hetcomp.teachers import evaluate_model, fit_teacher, load_data, make_config

logger = logging.getLogger("recbole_hetcomp")


def teacher_row(traj):
    meta = traj.meta
    return {"name": traj.teacher, "kind": "teacher", "params": meta.get("params", 0),
            "test": meta.get("test", {}), "valid": meta.get("valid", {}),
            "train_s": meta.get("train_s"), "reused": meta.get("reused", False),
            "milestone_epochs": meta.get("milestone_epochs")}


def run_teachers(dataset, teachers=None, config_files=None, config_dict=None, cmd_args=None,
                 output=None, rebuild=False):
    """Train or re-use every teacher, evaluate each and their ensemble; returns (rows, trajectories)."""
    base = make_config("HetCompEnsemble", dataset, config_files, config_dict, cmd_args)
    init_logger(base)
    teachers = list(teachers or base["teachers"])
    store = TrajectoryStore(base["trajectory_store"])
    output = Path(output or Path("results") / dataset)
    base["checkpoint_dir"] = str(output / "checkpoints")

    rows, trajectories = [], []
    for i, name in enumerate(teachers, 1):
        logger.info(f"[{i}/{len(teachers)}] teacher {name}")
        data = load_data(make_config(name, dataset, config_files, config_dict, cmd_args))
        traj = fit_teacher(data, store, rebuild=rebuild)
        trajectories.append(traj)
        rows.append(teacher_row(traj))

    protocol = load_data(base)
    for traj in trajectories:
        if traj.meta["split_fingerprint"] != protocol.fingerprint:
            raise RuntimeError(f"teacher {traj.teacher} was trained on another split than the ensemble's "
                               "evaluation; the split settings must not differ between teachers")
    start = time.time()
    ensemble = HetCompEnsemble(base, protocol.train_dataset, trajectories=trajectories)
    result = evaluate_model(ensemble, protocol)
    rows.append({"name": "Ensemble(" + "+".join(teachers) + ")", "kind": "ensemble",
                 "params": sum(r["params"] for r in rows), "test": result["test"], "valid": result["valid"],
                 "train_s": None, "eval_s": time.time() - start})
    table = write_results(output, dataset, rows)
    return rows, trajectories, table
