"""Teachers: train (or re-use from the store) each teacher with its trajectory.

    data = load_data(make_config("BPR", "ml-100k"))       # recbole_hetcomp.run.training
    traj = fit_teacher(data, TrajectoryStore("trajectories"))
"""

import json
import logging
import os
import platform
import tempfile

import numpy as np

from recbole_hetcomp.registry import get_model, get_trainer, is_general_model
from recbole_hetcomp.run.training import evaluate_model, train_model
from recbole_hetcomp.trainer import trajectory_trainer
from recbole_hetcomp.trajectories.recorder import TrajectoryRecorder, check_milestones
from recbole_hetcomp.trajectories.store import Trajectory, teacher_key

logger = logging.getLogger("recbole_hetcomp")


def check_teacher(config, train_dataset):
    """The teacher is a general recommender, validated by a ranking metric, with a ``trajectory_top_n`` that fits."""
    name = config["model"]
    if not is_general_model(get_model(name)):
        raise ValueError(f"teacher '{name}' is not a general recommender (it must rank all items for a user): "
                         "choose e.g. BPR, LightGCN, NeuMF, MultiVAE, EASE or CML")
    if not config["valid_metric_bigger"]:
        raise ValueError(f"valid_metric {config['valid_metric']} is smaller-is-better; trajectory milestones "
                         "need a ranking metric such as Recall@50")
    check_milestones(config["trajectory_milestones"])
    top_n = config["trajectory_top_n"]
    max_train = int(np.diff(train_dataset.inter_matrix(form="csr").indptr).max())
    room = train_dataset.item_num - 1 - max_train
    if not isinstance(top_n, int) or top_n < 1 or top_n > room:
        raise ValueError(f"trajectory_top_n={top_n} must be an integer in [1, {room}] on this dataset "
                         f"({train_dataset.item_num - 1} items, a user with {max_train} training items): "
                         f"set --trajectory_top_n to at most {room}")


def trained_on(ray_node=None):
    """Where a teacher trains: host name, process id and, as a Ray task, the Ray node's id (the
    nodes of one machine share a host name). Recorded in its ``meta.json``, never in its key."""
    return {"host": platform.node(), "pid": os.getpid(), "ray_node": ray_node}


def stored_teacher_ms(data, store, key):
    """``infer_ms_per_1k_users`` of the teacher stored under ``key``, measured now, on this machine: its weights
    (``model.pth``) loaded into a model built from ``data``, then its full ranking of every user timed as after
    training. The model is built as RecBole builds it (EASE computes its closed form again)."""
    config, name = data.config, data.config["model"]
    state = store.load_model_state(config["dataset"], name, key)
    model = get_model(name)(config, data.train_dataset).to(config["device"])
    model.load_state_dict(state["state_dict"])
    model.load_other_parameter(state.get("other_parameter"))
    before = config["checkpoint_dir"]
    try:
        with tempfile.TemporaryDirectory(prefix=f"time-{name}-") as workdir:  # RecBole's Trainer makes its
            config["checkpoint_dir"] = workdir                                  # checkpoint directory: not ./saved
            return evaluate_model(model, data, phases=(), timing=True)["infer_ms_per_1k_users"]
    finally:
        config["checkpoint_dir"] = before


def retime_stored_teacher(data, store, key, traj):
    """Give a re-used ``traj`` the inference time of this run's machine and load (the one it stored is of where
    and how it trained: another machine, GPU or thread count would make the ensemble's time incomparable with the
    student's). ``meta['infer_ms_from']`` says which time it holds; the stored one stays as
    ``infer_ms_when_trained``. A model file that cannot be read keeps the stored time, with a warning."""
    stored = traj.meta.get("infer_ms_per_1k_users")
    traj.meta["infer_ms_when_trained"] = stored
    try:
        traj.meta["infer_ms_per_1k_users"] = stored_teacher_ms(data, store, key)
        traj.meta["infer_ms_from"] = "this run"
    except Exception as e:  # a missing or unreadable model.pth: the metrics and lists are still good
        logger.warning(f"teacher {traj.teacher}: could not time its stored model "
                       f"({store.path(data.config['dataset'], traj.teacher, key) / 'model.pth'}: {e}); "
                       "its inference time is the one stored when it trained")
        traj.meta["infer_ms_from"] = "the store"
    return traj


def fit_teacher(data, store, rebuild=False, ray_node=None):
    """Return the teacher's trajectory: from ``store`` if present and valid, else trained now.

    ``data`` is the teacher's own :class:`Data` (its config names the teacher model). The
    teacher trains exactly as RecBole would, in a private checkpoint directory; its
    trajectory (and weights) are then written atomically to the store, with where it trained
    (:func:`trained_on`; ``ray_node`` is given by a Ray task). A re-used teacher keeps the
    record of where it was trained, and its inference is timed again here (:func:`retime_stored_teacher`).
    """
    config, name = data.config, data.config["model"]
    dataset_name = config["dataset"]
    check_teacher(config, data.train_dataset)
    key = teacher_key(config, data.fingerprint)
    if store.exists(dataset_name, name, key) and not rebuild:
        traj = store.load(dataset_name, name, key, data.fingerprint)
        traj.meta["reused"] = True
        logger.info(f"teacher {name}: re-using trajectory {store.path(dataset_name, name, key)}")
        retime_stored_teacher(data, store, key, traj)
        return traj

    store.clean_stale(dataset_name)  # what killed runs left behind (never a live process's)
    prefix = f".train-{name}-"
    try:
        workdir = store.temp_dir(dataset_name, prefix)
        where = trained_on(ray_node)
        (workdir / "trained_on.json").write_text(json.dumps(where) + "\n")  # who owns this directory
        recorder = TrajectoryRecorder(data.train_dataset.user_num, config["trajectory_top_n"],
                                      config["trajectory_milestones"])
        trainer, row = train_model(data, workdir, trajectory_trainer(get_trainer(config["MODEL_TYPE"], name)),
                                   prepare=lambda t: setattr(t, "recorder", recorder))
        final_top, obs_items, obs_indptr = trainer.rank_all_users(data.train_dataset, config["trajectory_top_n"])
        points, chosen = recorder.points(final_top)
        meta = {
            "split_fingerprint": data.fingerprint,
            "milestones": recorder.fractions,
            "milestone_epochs": [recorder.epochs[i] for i in chosen],
            "milestone_valid_scores": [recorder.scores[i] for i in chosen],
            "valid_curve": {"epochs": recorder.epochs, "scores": recorder.scores},
            "valid_metric": config["valid_metric"],
            "best_valid_score": float(trainer.best_valid_score),
            **{k: row[k] for k in ("valid", "test", "params", "infer_ms_per_1k_users", "train_s", "epochs")},
            "n_users": data.train_dataset.user_num,
            "n_items": data.train_dataset.item_num,
            "config": {k: v for k, v in sorted(config.final_config_dict.items())},
            "trained_on": where,
        }
        traj = Trajectory(name, points, obs_items, obs_indptr, meta)
        model = trainer.model
        state = {"state_dict": model.state_dict(), "other_parameter": model.other_parameter()}
        store.save(dataset_name, key, traj, model_state=state, replace=rebuild)
        traj.meta.update(reused=False, infer_ms_from="this run")
        logger.info(f"teacher {name}: test {row['test']}; points at epochs {meta['milestone_epochs']}")
        return traj
    finally:  # also after Ctrl-C, wherever it lands (even inside mkdtemp)
        store.remove_own_temp(dataset_name, prefix)
