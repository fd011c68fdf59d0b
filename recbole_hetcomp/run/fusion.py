"""The run's ensemble fusion: fitted on validation (``ensemble_fit: True``, the default), given by the
user, or the equal-weight default; chosen once and then used everywhere.

:func:`choose_fusion` reads the teachers' final-point lists and the validation split (never the
test split), fits the fusion with :func:`recbole_hetcomp.distill.fit.fit_fusion`, also fits it on
each half of the validation users and scores the other half (the held-out gain), and keeps the
result in the trajectory store, keyed by the teachers' stored lists, the split and the search
settings. A later run with the same inputs re-uses it; ``refit`` fits again.

What the user sets wins: ``teacher_weights`` given in a config file, a config dict or on the
command line fixes the weights (only the importance is searched); any of ``ensemble_importance``,
``ensemble_tau``, ``ensemble_rrf_k``, ``ensemble_power`` fixes the importance (only the weights
are searched); both fix everything, and nothing is fitted.
"""

import hashlib
import json
import logging
import time
from dataclasses import dataclass

import torch

from recbole_hetcomp.distill.ensemble import importance_from_config, teacher_weight_vector
from recbole_hetcomp.distill.fit import (
    METHODS,
    PARAMETER,
    Fusion,
    best_single_teacher,
    check_grid,
    fit_fusion,
    halves,
    parse_metric,
    prepare_sample,
    score_fusion,
)
from recbole_hetcomp.settings import positive_int

logger = logging.getLogger("recbole_hetcomp")

FIT_FORMAT = 1
WEIGHT_KEYS = ("teacher_weights",)
IMPORTANCE_KEYS = ("ensemble_importance", "ensemble_tau", "ensemble_rrf_k", "ensemble_power")
#: The keys that describe the run's ensemble: one fusion for its row, every student and every Tune trial.
FUSION_KEYS = WEIGHT_KEYS + IMPORTANCE_KEYS
#: Each importance parameter's key -> the importance kind it belongs to.
KIND_OF_PARAMETER = {"ensemble_tau": "exp", "ensemble_rrf_k": "rrf", "ensemble_power": "power"}


@dataclass
class RunFusion:
    """The fusion of a run. ``fitted``: chosen on validation; ``record``: what is stored of the fit
    (None when nothing was fitted)."""

    fusion: Fusion
    fitted: bool
    record: dict = None

    @property
    def label(self):
        return "fitted on validation" if self.fitted else given_label(self.fusion)

    def active(self, trajectories):
        """The trajectories of the teachers with a weight above 0, in run order."""
        return self.fusion.active(trajectories)

    def config(self, trajectories):
        """Config keys that make an ensemble or a student of ``self.active(trajectories)`` use this fusion."""
        out = self.fusion.config()
        active = {t.teacher for t in self.active(trajectories)}
        out["teacher_weights"] = {t: w for t, w in out["teacher_weights"].items() if t in active}
        return out


def given_label(fusion):
    return "equal weights" if len(set(fusion.weights)) == 1 else "teacher_weights"


def user_set(config, keys):
    """The ``keys`` a user set for ``config``: in a config file, a config dict or on the command line
    (not our properties/ defaults)."""
    return [k for k in keys if k in config.external_config_dict]  # RecBole's merge of those three


def check_fusion_keys(base, student=None):
    """The run's fusion keys make sense before anything trains: an importance parameter the user sets belongs to
    the importance kind in use (``--ensemble_rrf_k=30`` alone would leave ``exp`` in place and fix it, silently),
    and ``student`` (the student's config) describes the same fusion as ``base`` (a ``HetComp.``-scoped fusion key
    would make the student learn another ensemble than the one its row names)."""
    kind = base["ensemble_importance"] or "exp"
    for key in user_set(base, tuple(KIND_OF_PARAMETER)):
        if KIND_OF_PARAMETER[key] != kind:
            raise ValueError(f"{key}={base[key]} is the parameter of ensemble_importance={KIND_OF_PARAMETER[key]}, "
                             f"but ensemble_importance is {kind}: also set ensemble_importance="
                             f"{KIND_OF_PARAMETER[key]}, or drop {key}")
    if student is None:
        return
    for key in FUSION_KEYS:
        if student[key] != base[key]:
            raise ValueError(f"HetComp.{key}={student[key]}: the ensemble is the run's, not the student's (its row, "
                             f"every student and every --tune trial learn one fusion): set {key} without the "
                             "HetComp. scope")


def config_fusion(config, teachers):
    """The fusion that ``config`` describes (its weights and importance, no fit)."""
    imp = importance_from_config(config)
    param = imp[PARAMETER[imp["kind"]]]
    weights = teacher_weight_vector(teachers, config["teacher_weights"]).tolist()
    return Fusion(list(teachers), imp["kind"], float(param), weights)


def fit_settings(config):
    """The fit's search settings from ``config`` (checked). The fit maximises ``ensemble_fit_metric`` when it is
    set, else ``valid_metric`` (left unset, the settings, and so a stored fit's key, are what they were)."""
    key = "valid_metric" if config["ensemble_fit_metric"] is None else "ensemble_fit_metric"
    metric = config[key]
    parse_metric(metric, key)
    method = config["ensemble_fit_method"]
    if method not in METHODS:
        raise ValueError(f"ensemble_fit_method={method!r}: choose one of {', '.join(METHODS)}")
    settings = {"metric": str(metric).lower(), "method": method, "grid": check_grid(config["ensemble_fit_grid"]),
                "max_steps": positive_int(config, "ensemble_fit_max_steps"), "patience": 2,
                "users": None if config["ensemble_fit_users"] is None else positive_int(config, "ensemble_fit_users")}
    if method == "bagged":  # only then: the other searches' settings, and so their stored fits' keys, stay as they were
        settings["bags"] = positive_int(config, "ensemble_fit_bags")
        settings["bag_seed"] = int(config["seed"])
    return settings


def within_lists(settings, n, warn=True):
    """``settings`` whose metric ranks at most ``n`` items, the length of the teachers' lists. The fit scores a fusion
    from those lists alone, which is RecBole's metric of it only while its top-k comes from them; where the metric
    asks for more (``--trajectory_top_n`` below ``valid_metric``'s cut-off), the fit maximises the same metric at
    ``n`` and says so."""
    name, k = parse_metric(settings["metric"])
    if k <= n:
        return settings
    if warn:  # the check before a run says it; the fit itself then applies it quietly
        logger.warning(f"ensemble fit: the teachers' lists hold {n} items, fewer than {settings['metric']} ranks: "
                       f"the fit maximises {name}@{n} (raise --trajectory_top_n to at least {k} to fit at {k})")
    return {**settings, "metric": f"{name}@{n}"}


def split_items(data, split="valid"):
    """The items of one split of ``data`` per user, as CSR (``indptr`` [U + 1], ``items``), users and items in
    order. The run's fit reads ``"valid"`` only; ``benchmarks/ensemble_fit.py``'s ceiling reads ``"test"``."""
    feat = getattr(data, split)._dataset.inter_feat
    uid, iid = data.train_dataset.uid_field, data.train_dataset.iid_field
    users, items = feat[uid].long(), feat[iid].long()
    n_users = data.train_dataset.user_num
    order = torch.argsort(users * data.train_dataset.item_num + items)
    users, items = users[order], items[order]
    indptr = torch.zeros(n_users + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(torch.bincount(users, minlength=n_users), 0)
    return indptr, items


def validation_problem(data, trajectories, most=None, seed=0, valid=None):
    """The fit's :class:`~recbole_hetcomp.distill.fit.FitProblem`: the teachers' final lists and the
    validation items of every user (only the validation split is read; ``valid``, its :func:`split_items` when the
    caller has read it already); with ``most``, of a sample of at most that many users drawn by ``seed``
    (``ensemble_fit_users``), the others not prepared. Returns (problem, the number of users with validation
    items)."""
    indptr, items = split_items(data, "valid") if valid is None else valid
    lists = torch.stack([t.top[-1] for t in trajectories])  # int32: prepare widens a block of users at a time
    return prepare_sample(lists, indptr, items, most, seed)


def fit_key(trajectories, fingerprint, settings, fixed):
    """Hash of what a fit depends on: each teacher's stored lists (their checksum), the split and the search."""
    teachers = [(t.teacher, (t.meta.get("files", {}).get("top.npy") or {}).get("sha256")) for t in trajectories]
    payload = json.dumps({"format": FIT_FORMAT, "teachers": teachers, "split": fingerprint, "settings": settings,
                          "fixed": fixed}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def fit_with_settings(problem, names, settings, fixed=None):
    """:func:`~recbole_hetcomp.distill.fit.fit_fusion` of ``problem`` under :func:`fit_settings`' ``settings`` and
    the user's ``fixed`` weights or importance (None or ``{}``: none)."""
    bagging = {"bags": settings["bags"], "seed": settings["bag_seed"]} if "bags" in settings else {}
    return fit_fusion(problem, names, settings["metric"], grid=settings["grid"], method=settings["method"],
                      max_steps=settings["max_steps"], patience=settings["patience"], **bagging, **(fixed or {}))


def _held_out(problem, given, settings, fixed, seed):
    """Fit on one half of the validation users, score the other half; both ways round."""
    names = given.teachers
    folds = []
    a, b = halves(problem.n_users, seed)
    for fit_rows, score_rows in ((a, b), (b, a)):
        fit_part, score_part = problem.subset(fit_rows), problem.subset(score_rows)
        fitted = fit_with_settings(fit_part, names, settings, fixed)
        row = {"users": [int(fit_rows.numel()), int(score_rows.numel())],
               "fitted": score_fusion(score_part, fitted, settings["metric"]),
               "equal_weights": score_fusion(score_part, given, settings["metric"]), "fusion": fitted.describe()}
        # the teacher best on the fitting half, scored on the other: what a user picking one teacher would get
        single, _ = best_single_teacher(fit_part, settings["metric"])
        one = Fusion(names, "exp", 10.0, [1.0 if x == single else 0.0 for x in range(len(names))])
        row["best_teacher"] = {"name": names[single], "score": score_fusion(score_part, one, settings["metric"])}
        folds.append(row)
    mean = lambda key: sum(f[key] for f in folds) / len(folds)  # noqa: E731
    return {"seed": int(seed), "folds": folds, "fitted": mean("fitted"), "equal_weights": mean("equal_weights"),
            "best_teacher": sum(f["best_teacher"]["score"] for f in folds) / len(folds)}


def choose_fusion(config, data, trajectories, store=None, refit=False):
    """The run's :class:`RunFusion` (see the module doc). ``config`` is the run's base config,
    ``data`` its split (:class:`~recbole_hetcomp.run.training.Data`), ``store`` a
    :class:`~recbole_hetcomp.trajectories.store.TrajectoryStore` to keep and re-use the fit in."""
    names = [t.teacher for t in trajectories]
    given = config_fusion(config, names)
    fixed_w, fixed_imp = user_set(config, WEIGHT_KEYS), user_set(config, IMPORTANCE_KEYS)
    if not config["ensemble_fit"] or len(names) == 1 or (fixed_w and fixed_imp):
        return RunFusion(given, fitted=False)
    settings = within_lists(fit_settings(config), min(t.top[-1].shape[-1] for t in trajectories), warn=False)
    valid = split_items(data, "valid")
    indptr = valid[0]
    if settings["users"] is not None and int(((indptr[1:] - indptr[:-1]) > 0).sum()) > settings["users"]:
        settings["sample_seed"] = int(config["seed"])  # a sample of the users, drawn by the seed: the seed's own fit
    fixed = {}
    if fixed_w:
        fixed["weights"] = given.weights
    if fixed_imp:
        fixed["fixed_importance"] = (given.kind, given.param)
    key = fit_key(trajectories, data.fingerprint, settings, fixed)
    dataset = config["dataset"]
    record = None if (refit or store is None) else store.load_fit(dataset, key)
    if record is not None:
        fusion = Fusion(names, record["fusion"]["kind"], record["fusion"]["param"], record["fusion"]["weights"],
                        record["valid_score"])
        record = {**record, "reused": True}
        logger.info(f"ensemble fit: re-using {store.fit_path(dataset, key)}: {fit_summary(record)}")
        return RunFusion(fusion, fitted=True, record=record)
    start = time.perf_counter()
    problem, total = validation_problem(data, trajectories, settings["users"], config["seed"], valid)
    fusion = fit_with_settings(problem, names, settings, fixed)
    fit_s = time.perf_counter() - start
    held_out = _held_out(problem, given, settings, fixed, config["seed"])
    single = best_single_teacher(problem, settings["metric"])
    record = {"format": FIT_FORMAT, "dataset": dataset, "teachers": names, "split_fingerprint": data.fingerprint,
              "settings": settings, "fixed": {k: list(v) if isinstance(v, tuple) else v for k, v in fixed.items()},
              "fusion": {"kind": fusion.kind, "param": fusion.param, "weights": fusion.weights},
              "valid_score": fusion.score, "equal_weights_score": score_fusion(problem, given, settings["metric"]),
              "best_teacher": {"name": names[single[0]], "score": single[1]},
              "users": problem.n_users, "users_validated": total, "fit_s": fit_s, "held_out": held_out, "trace": fusion.trace}
    if store is not None:
        store.save_fit(dataset, key, record)
    record = {**record, "reused": False}
    logger.info(f"ensemble fit ({fit_s:.1f} s): {fit_summary(record)}")
    return RunFusion(fusion, fitted=True, record=record)


def fit_summary(record):
    """One line on a fit ``record``: the chosen fusion, then its validation score against the best single teacher's
    and the equal weights', in full and on held-out halves."""
    settings, best, held = record["settings"], record.get("best_teacher"), record.get("held_out") or {}
    fusion = Fusion(record["teachers"], record["fusion"]["kind"], record["fusion"]["param"], record["fusion"]["weights"])
    line = (f"{fusion.describe()} ({settings['method']} fit on validation {settings['metric']}"
            f"{', re-used from the store' if record.get('reused') else ''}): {record['valid_score']:.4f}")
    if best:
        line += f" against the best teacher's ({best['name']}) {best['score']:.4f}"
    line += f" and equal weights' {record['equal_weights_score']:.4f}"
    if held.get("fitted") is not None:
        line += f"; on held-out halves {held['fitted']:.4f}"
        if held.get("best_teacher") is not None:
            line += f" against {held['best_teacher']:.4f}"
        line += f" and {held['equal_weights']:.4f}"
    return line
