"""Ray Tune searches over HetComp or any RecBole baseline, on the pipeline's split and protocol.

    python run_recbole_hetcomp.py --tune                          # HetComp, properties/hyper/hetcomp.yaml
    python run_recbole_hetcomp.py --model BPR --tune --num_samples 8 --scheduler fifo

:func:`run_tune` (HetComp) first trains or re-uses every teacher, once, recording them at the
union of the milestone sets the space can choose, then starts the search. Each trial is
:func:`trial`: it trains the model with :func:`recbole_hetcomp.run.training.train_model` in its own
directory and reports the validation metrics after every evaluation (``valid_<metric>``, so
ASHA can stop it early), then once more at the end with the best validation and the test
metrics (``test_<metric>``), which are reported but never used for selection. The best trial is
the one with the highest best validation score. A crashed trial is retried
(``tune_max_failures``) and, if it keeps failing, reported as failed; the others go on.

An interrupted search (Ctrl-C, the driver killed) resumes when the same command runs again:
``search.json`` names the experiment and a hash of everything that defines the search, and an
unfinished experiment of the same hash is restored (``Tuner.restore``) instead of started anew.
Finished trials are not trained again: Tune keeps them, and a trial that finished after Tune's
last save of its state replays its reports from its ``final.json``.

Writes into ``<output>/tune/``: ``trials.md`` and ``tune_results.json`` (every trial: status,
attempts, evaluations, parameters, best validation, test metrics, where it trained),
``best_config.yaml``, ``search.json`` and Ray's own experiment directory (``ray/``; each trial's
logs, checkpoints and saved model).
"""

import contextlib
import glob
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import yaml

from recbole_hetcomp.distributed.search_space import choices_of, default_space_file, load_search_space, to_tune
from recbole_hetcomp.run.results import METRIC_COLUMNS, atomic_write_text
from recbole_hetcomp.trajectories.recorder import check_milestones

logger = logging.getLogger("recbole_hetcomp")

# Keys that change the split or the teachers: searching them would break the shared teachers.
TEACHER_SIDE_KEYS = frozenset({"seed", "eval_args", "split_seed", "benchmark_filename", "trajectory_top_n",
                               "teachers", "trajectory_store", "dataset", "data_path"})


def metric_key(valid_metric):
    return f"valid_{valid_metric.lower()}"


def _trial_dirs(here, trial_id):
    """Every directory of one trial: its own, and those of its earlier runs (Tune names a new one for a
    trial restored from a state saved before the trial had started)."""
    if not trial_id:
        return [Path(here)]
    return sorted({Path(here), *Path(here).parent.glob(f"*_{glob.escape(trial_id)}_*")})


def _finished_run(here, trial_id, params):
    """The ``final.json`` record of an earlier run of this trial that finished, or None."""
    for folder in _trial_dirs(here, trial_id):
        try:
            record = json.loads((folder / "final.json").read_text())
        except (OSError, ValueError):
            continue
        if json.dumps(record["params"], sort_keys=True, default=str) == json.dumps(params, sort_keys=True, default=str):
            return record
    return None


def trial(params, *, model, dataset, config_files, config_dict, cmd_args, trajectories=None, threads=1):
    """One Ray Tune trial: train ``model`` with ``params`` over the fixed config; report as it goes.

    Every report carries ``trained_on`` (host, pid, Ray node). All of them are written to
    ``final.json`` before the last one is sent: a finished trial that Tune runs again (a search
    resumed from a state saved before it finished) replays them instead of training again."""
    import ray
    import torch
    from ray.air import session
    from recbole.utils import init_logger

    from recbole_hetcomp.config import make_config
    from recbole_hetcomp.run.pipeline import student_trajectories
    from recbole_hetcomp.run.results import atomic_write_text
    from recbole_hetcomp.run.teachers import trained_on
    from recbole_hetcomp.run.training import load_data, train_model

    here = Path.cwd()  # Ray runs each trial in its own directory
    record = _finished_run(here, session.get_trial_id(), params)
    if record is not None:
        for payload in record["reports"]:
            session.report(payload)
        return
    torch.set_num_threads(max(1, int(threads)))
    with open(here / "attempts.log", "a") as f:  # a retried trial runs again in the same directory
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    where = trained_on(ray.get_runtime_context().get_node_id())
    reports = []

    def send(payload):
        reports.append({**payload, "trained_on": where})
        session.report(reports[-1])

    config = make_config(model, dataset, config_files, {**config_dict, **params, "show_progress": False},
                         cmd_args)
    init_logger(config)  # RecBole's log file goes to the trial's directory (./log)
    data = load_data(config)
    kwargs = {}
    if trajectories is not None:
        kwargs["model_kwargs"] = {"trajectories": student_trajectories(data, trajectories, "trial")}
    key = metric_key(config["valid_metric"])
    best = {"score": -math.inf}

    def report(epoch, score, result):
        best["score"] = max(best["score"], score)
        send({"epoch": epoch, key: score, "best_valid": best["score"],
              **{f"valid_{k}": v for k, v in (result or {}).items()}})

    (here / "checkpoints").mkdir(exist_ok=True)
    _, row = train_model(data, here / "checkpoints", save_to=here / "model.pth", on_evaluation=report, **kwargs)
    valid = row["valid"]
    last = {"epoch": row["epochs"] - 1, key: valid.get(config["valid_metric"].lower(), best["score"]),
            "best_valid": max(best["score"], valid.get(config["valid_metric"].lower(), -math.inf)),
            **{f"valid_{k}": v for k, v in valid.items()},
            **{f"test_{k}": v for k, v in row["test"].items()},
            "finished": True, "epochs": row["epochs"], "train_s": row["train_s"],
            "params": row["params"], "model_file": row.get("model_file"), "trained_on": where}
    atomic_write_text(here / "final.json", json.dumps({"params": params, "reports": [*reports, last]}, default=str) + "\n")
    session.report(last)


def _milestone_union(space, base_milestones):
    values = choices_of(space, "trajectory_milestones")
    if "trajectory_milestones" in space and values is None:
        raise ValueError("trajectory_milestones can be searched only with {choice: [...]} or {grid: [...]} "
                         "of milestone lists")
    if values is None:
        return None
    union = set()
    for v in values:
        union.update(check_milestones(v))
    union = sorted(union)
    return None if union == check_milestones(base_milestones) else union


def _scheduler(name, config, max_t):
    if name == "fifo":
        return None
    if name != "asha":
        raise ValueError(f"unknown scheduler '{name}': use asha or fifo")
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=int(config["tune_grace_period"]),
                         reduction_factor=int(config["tune_reduction_factor"]))


def run_tune(model, dataset, space_file=None, num_samples=8, scheduler="asha", ray_address=None,
             config_files=None, config_dict=None, cmd_args=None, output=None, rebuild=False,
             parallel_teachers=False, teachers=None, refit_ensemble=False):
    """Search ``model``'s hyper-parameters with Ray Tune; returns (summary dict, markdown table).

    For HetComp the ensemble's fusion is chosen once, before the trials (fitted on validation with
    ``ensemble_fit``, see :mod:`recbole_hetcomp.run.fusion`), and every trial learns it. A space may search
    a fusion key (``ensemble_tau``, ``teacher_weights``, ...) only with ``ensemble_fit: False``: each trial
    then lays its value over the config's fusion, and the summary says so."""
    from recbole.utils import init_logger

    from recbole_hetcomp.config import make_config, scoped_args, split_global_args, without_keys
    from recbole_hetcomp.distributed.parallel import RayTeachers, absolute_paths, ray_session
    from recbole_hetcomp.keys import check_keys
    from recbole_hetcomp.run.fusion import FUSION_KEYS, choose_fusion
    from recbole_hetcomp.run.pipeline import build_teachers, prepare_output
    from recbole_hetcomp.run.preflight import check_output, check_pipeline
    from recbole_hetcomp.schema import check_values
    from recbole_hetcomp.trajectories.store import TrajectoryStore

    global_args = split_global_args(cmd_args)
    is_hetcomp = model.lower() == "hetcomp"
    first = make_config("HetComp" if is_hetcomp else model, dataset, config_files, config_dict, global_args)
    name = first["model"]
    if name == "HetCompEnsemble":
        raise ValueError("HetCompEnsemble has nothing to train: tune HetComp or a baseline")
    teachers = list(teachers or first["teachers"]) if is_hetcomp else []
    # the trial's own arguments: global ones and --<Model>.key=value addressed to it
    trial_args = scoped_args(cmd_args, name, [name, *teachers])
    base = make_config(name, dataset, config_files, config_dict, trial_args)
    init_logger(base)
    if not space_file and not default_space_file(name).is_file():
        raise ValueError(f"no search space for {name} in properties/hyper/: write one (see "
                         f"{default_space_file('HetComp')}) and pass it with --search_space FILE")
    space_file = Path(space_file) if space_file else default_space_file(name)
    space = load_search_space(space_file, known_keys=set(base.final_config_dict))
    fixed_on_cli = {a[2:].split("=", 1)[0] for a in trial_args} & set(space)
    if fixed_on_cli:
        raise ValueError(f"{', '.join(sorted(fixed_on_cli))} is both searched and fixed on the command line: "
                         "remove it from one of them")
    if is_hetcomp and set(space) & TEACHER_SIDE_KEYS:
        raise ValueError(f"{', '.join(sorted(set(space) & TEACHER_SIDE_KEYS))} changes the split or the teachers, "
                         "which every trial shares: fix it with --key=value instead of searching it")
    searched_fusion = sorted(set(space) & set(FUSION_KEYS)) if is_hetcomp else []
    if searched_fusion and base["ensemble_fit"]:
        raise ValueError(f"{', '.join(searched_fusion)} is searched in {space_file}, but the ensemble is fitted on "
                         "validation once, before the trials, and every trial learns it (ensemble_fit: True): "
                         "remove it from the search space, or set --ensemble_fit=False to search it")
    output = output or Path("results") / dataset
    union = _milestone_union(space, base["trajectory_milestones"]) if is_hetcomp else None
    teacher_over = {"trajectory_milestones": union} if union else {}
    if is_hetcomp:  # names, keys, N and K, stored teachers: all checked before anything is written
        plan = check_pipeline(dataset, teachers, config_files, {**(config_dict or {}), **teacher_over}, cmd_args,
                              student=True, output=output, rebuild=rebuild)
    else:
        check_output(output)
        check_keys({name: base}, config_files, cmd_args)
        check_values(base)
    output = prepare_output(output) / "tune"
    output.mkdir(exist_ok=True)
    files = [str(Path(f).resolve()) for f in config_files or []]
    fixed = {**(config_dict or {}), **absolute_paths(base)}
    epochs = max(choices_of(space, "epochs") or [base["epochs"]])
    max_t = epochs // max(1, int(base["eval_step"])) + 2  # every evaluation and the final report

    start = time.time()
    with ray_session(ray_address):
        trajectories, ensemble = None, None
        if is_hetcomp:
            teacher_dict = {**fixed, **teacher_over}
            ray_teachers = parallel_teachers or ray_address
            parallel = RayTeachers(base["teacher_cpus"], base["teacher_gpus"]) if ray_teachers else None
            logger.info(f"tune: teachers {'+'.join(teachers)} first (trained once, shared by every trial)")
            _, trajectories = build_teachers(dataset, teachers, files, teacher_dict, cmd_args, rebuild,
                                             parallel=parallel)
            ensemble_config = plan.protocol.config
            fusion = choose_fusion(ensemble_config, plan.protocol, trajectories,
                                   TrajectoryStore(ensemble_config["trajectory_store"]), refit=refit_ensemble)
            # the run's fusion wins over the user's keys (it holds them already, for the teachers it keeps)
            fixed = {**fixed, **fusion.config(trajectories)}
            trial_args = without_keys(trial_args, FUSION_KEYS)
            trajectories = fusion.active(trajectories)
            ensemble = f"{fusion.label}: {fusion.fusion.describe()}"
            logger.info(f"tune: every trial learns the ensemble {ensemble}")
        teachers_s = time.time() - start
        summary = _search(name, dataset, files, fixed, trial_args, trajectories,
                          space, num_samples, scheduler, base, max_t, output)
    summary.update(teachers_s=round(teachers_s, 1), search_s=round(time.time() - start - teachers_s, 1),
                   space_file=str(space_file), dataset=dataset, ensemble=ensemble, ensemble_searched=searched_fusion)
    table = write_tune_results(output, summary)
    return summary, table


def _search(name, dataset, files, fixed, cmd_args, trajectories, space, num_samples, scheduler, base, max_t,
            output):
    from ray import air, tune

    from recbole_hetcomp.distributed.parallel import gpus_for

    cpus = max(1, int(base["tune_cpus_per_trial"]))
    trainable = tune.with_parameters(trial, model=name, dataset=dataset, config_files=files, config_dict=fixed,
                                     cmd_args=cmd_args, trajectories=trajectories, threads=cpus)
    trainable = tune.with_resources(trainable, {"cpu": cpus, "gpu": gpus_for(base, base["tune_gpus_per_trial"])})
    key = metric_key(base["valid_metric"])
    search = search_hash(name, dataset, space, num_samples, scheduler, base, fixed, cmd_args)
    resumed = _resumable(output, search)
    if resumed:
        logger.info(f"tune: resuming the interrupted search {resumed} (to start afresh instead, delete "
                    f"{output / 'search.json'})")
        tuner = tune.Tuner.restore(resumed, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        experiment = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        # syncer=None: trial directories are written where they are read (one machine, or a shared filesystem)
        tuner = tune.Tuner(
            trainable, param_space=to_tune(space),
            tune_config=tune.TuneConfig(metric=key, mode="max", num_samples=num_samples,
                                        scheduler=_scheduler(scheduler, base, max_t),
                                        max_concurrent_trials=int(base["tune_max_concurrent_trials"]) or None),
            run_config=air.RunConfig(name=experiment, storage_path=str(output / "ray"),
                                     failure_config=air.FailureConfig(max_failures=int(base["tune_max_failures"])),
                                     sync_config=tune.SyncConfig(syncer=None), verbose=1))
        _write_search_state(output, search, (output / "ray" / experiment).resolve(), finished=False)
    with _plain_interrupts():
        grid = tuner.fit()
    _write_search_state(output, search, grid.experiment_path, finished=True)
    trials = [_trial_row(r, key, space) for r in grid]
    trials.sort(key=lambda t: -t["best_valid"] if t["best_valid"] is not None else math.inf)
    best = trials[0] if trials and trials[0]["best_valid"] is not None else None
    return {"model": name, "scheduler": scheduler, "num_samples": num_samples, "metric": key,
            "experiment_dir": grid.experiment_path, "best": best, "trials": trials}


@contextlib.contextmanager
def _plain_interrupts():
    """Ctrl-C raises KeyboardInterrupt during a search, as anywhere else in a run: Tune's own handler
    would end the search early and return as if it had finished, with its running trials cut short."""
    old = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old


def search_hash(name, dataset, space, num_samples, scheduler, base, fixed, cmd_args):
    """16 hex digits naming everything that defines a search: a search is resumed only under the same."""
    payload = {"model": name, "dataset": dataset, "space": space, "num_samples": num_samples,
               "scheduler": scheduler, "config": base.final_config_dict, "fixed": fixed, "args": list(cmd_args or [])}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_search_state(output, search, experiment_dir, finished):
    atomic_write_text(output / "search.json", json.dumps(
        {"search": search, "experiment_dir": str(experiment_dir), "finished": finished}, indent=1) + "\n")


def _resumable(output, search):
    """The experiment directory of an unfinished search of hash ``search`` in ``output``, or None."""
    from ray import tune

    try:
        state = json.loads((output / "search.json").read_text())
    except (OSError, ValueError):
        return None
    path = state.get("experiment_dir") if isinstance(state, dict) else None
    if not path or state.get("finished"):
        return None
    if state.get("search") != search:
        logger.warning(f"tune: the interrupted search {path} had other settings: starting a new search")
        return None
    if not tune.Tuner.can_restore(path):  # killed before Tune first saved its state
        logger.warning(f"tune: the interrupted search {path} has no saved state: starting a new search")
        return None
    return path


def _last_attempt(df):
    """The rows of a trial's last run: a trial run again (retried, resumed) appends to the same log."""
    if df is None or "training_iteration" not in df or not len(df):
        return df
    starts = [i for i, it in enumerate(df["training_iteration"]) if it == 1]
    return df.iloc[starts[-1]:] if starts else df


def _trial_row(result, key, space):
    df = _last_attempt(result.metrics_dataframe)
    reports = 0 if df is None else len(df)
    metrics = result.metrics or {}
    scores = [] if df is None or key not in df else [float(x) for x in df[key].dropna()]
    finished = bool(metrics.get("finished"))
    attempts = 0  # training starts, over every directory of the trial (a resumed search may add one)
    for folder in _trial_dirs(result.log_dir, metrics.get("trial_id", "")) if result.log_dir else []:
        if (folder / "attempts.log").is_file():
            attempts += len((folder / "attempts.log").read_text().splitlines())
    if result.error is not None:
        status = f"failed: {type(result.error).__name__}: {str(result.error).strip().splitlines()[-1][:160]}"
    elif finished:
        status = "finished"
    else:
        status = f"stopped early at epoch {metrics.get('epoch', '?')}"
    trial_id = metrics.get("trial_id") or (Path(result.log_dir).name if result.log_dir else "?")
    return {"trial": trial_id, "status": status, "attempts": attempts,
            "evaluations": reports - (1 if finished else 0),
            "params": {k: result.config.get(k) for k in space},
            "best_valid": max(scores) if scores else None,
            "test": {m: metrics[f"test_{m}"] for m in METRIC_COLUMNS if f"test_{m}" in metrics},
            "epochs": metrics.get("epochs"), "train_s": metrics.get("train_s"), "model_file": metrics.get("model_file"),
            "trained_on": metrics.get("trained_on"), "trial_dir": result.log_dir and str(result.log_dir)}


def _cell(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_table(summary):
    keys = list(summary["trials"][0]["params"]) if summary["trials"] else []
    head = ["trial", "status", "attempts", "evaluations", *keys, summary["metric"] + " (best)",
            "test recall@20", "test ndcg@20"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in summary["trials"]:
        cells = [t["trial"], t["status"], str(t["attempts"]), str(t["evaluations"]),
                 *[_cell(t["params"][k]) for k in keys],
                 f"{t['best_valid']:.4f}" if t["best_valid"] is not None else "-",
                 *[f"{t['test'][m]:.4f}" if m in t["test"] else "-" for m in ("recall@20", "ndcg@20")]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reproduce_command(summary):
    """The command line training the best trial's config (HetComp: scoped to the student)."""
    model, dataset = summary["model"], summary["dataset"]
    prefix = "HetComp." if model == "HetComp" else ""
    args = [f"'--{prefix}{k}={json.dumps(v, separators=(',', ':'))}'" if isinstance(v, list) else f"--{prefix}{k}={v}"
            for k, v in summary["best"]["params"].items()]  # lists quoted: [..] is a shell pattern
    head = "python run_recbole_hetcomp.py" + ("" if model == "HetComp" else f" --model {model}")
    return " ".join([head, "-d", dataset, *args])


def write_tune_results(output, summary):
    table = trials_table(summary)
    best = summary["best"]
    lines = [f"# Ray Tune search: {summary['model']} on {summary['dataset']}", "",
             f"{len(summary['trials'])} trials, scheduler {summary['scheduler']}, selection by the best "
             f"{summary['metric']} (validation); test metrics are reported, never used to select.",
             f"Teachers: {summary.get('teachers_s', 0):.0f} s; search: {summary.get('search_s', 0):.0f} s.", "", table]
    if summary.get("ensemble") and summary.get("ensemble_searched"):
        lines[3:3] = [f"Every trial learns the ensemble {summary['ensemble']}, with its own "
                      f"{', '.join(summary['ensemble_searched'])} (searched)."]
    elif summary.get("ensemble"):
        lines[3:3] = [f"Every trial learns the ensemble {summary['ensemble']} (chosen once, before the trials)."]
    if best:
        lines += ["", f"Best trial {best['trial']}: {summary['metric']} {best['best_valid']:.4f}; "
                      f"test {', '.join(f'{k} {v:.4f}' for k, v in best['test'].items()) or 'not reached'}",
                  "", "Best config (best_config.yaml):", "", "```yaml", yaml.safe_dump(best["params"]).strip(), "```",
                  "", "The same run from the command line:", "", "```", reproduce_command(summary), "```"]
        atomic_write_text(output / "best_config.yaml", yaml.safe_dump(best["params"]))
    atomic_write_text(output / "trials.md", "\n".join(lines) + "\n")
    atomic_write_text(output / "tune_results.json", json.dumps(summary, indent=1, default=str) + "\n")
    return "\n".join(lines)
