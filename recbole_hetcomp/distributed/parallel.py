"""Ray: starting or joining a cluster, and training the teachers as Ray tasks.

    with ray_session(address=None):                      # local Ray sized to the machine
        rows, trajs = build_teachers(..., parallel=RayTeachers(cpus=1, gpus=0))
    run_pipeline("ml-100k", teacher_runner=ray_teacher_runner(address=None))   # the same, in the pipeline

Each teacher is one task declaring its resources (``teacher_cpus``, ``teacher_gpus``); it
trains exactly as :func:`recbole_hetcomp.run.teachers.fit_teacher` does in-process and writes its
trajectory into the same store (atomically: a temporary directory renamed into place), so a
later sequential run re-uses it and vice versa. On a multi-machine cluster the store and the
data must be on a filesystem every node sees (paths are made absolute before they are sent).
A task whose worker or node dies is retried on another node (:data:`TEACHER_RETRIES` times):
the teacher trains again from the start into a new temporary directory, and its ``meta.json``
records the Ray node it trained on (``trained_on``). An error of the teacher itself is not
retried: it would fail the same way again. docs/cluster.md has the whole story.

Ray is imported here only, and only when this module is used.
"""

import contextlib
import logging
import os
from pathlib import Path

logger = logging.getLogger("recbole_hetcomp")

#: Times a teacher's Ray task is started again after its worker process or node died (Ray's
#: default, made explicit): each retry trains the teacher from the start, so it is safe.
TEACHER_RETRIES = 3


@contextlib.contextmanager
def ray_session(address=None, num_cpus=None, num_gpus=None):
    """Join the Ray cluster at ``address``, or start a local one sized to this machine; shut a
    Ray started here down on exit (one already running in this process is left alone)."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        import torch

        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 num_gpus=torch.cuda.device_count() if num_gpus is None else num_gpus)
    try:
        yield
    finally:
        ray.shutdown()


def gpus_for(config, wanted):
    """GPUs a Ray task or trial must reserve: ``wanted``, or one whole GPU when the run uses CUDA
    (a task with no GPU reserved sees none: Ray hides them)."""
    wanted = float(wanted or 0)
    if wanted == 0 and str(config["device"]).startswith("cuda"):
        return 1.0
    return wanted


def absolute_paths(config):
    """Config entries that must mean the same on any worker: data, archive and store as absolute paths."""
    out = {"data_path": os.path.dirname(os.path.abspath(config["data_path"])),
           "trajectory_store": os.path.abspath(config["trajectory_store"])}
    if config["dataset_archive"]:
        out["dataset_archive"] = os.path.abspath(config["dataset_archive"])
    return out


def _fit_teacher_task(name, dataset, config_files, config_dict, cmd_args, rebuild, threads):
    import ray
    import torch

    from recbole_hetcomp.config import make_config
    from recbole_hetcomp.run.teachers import fit_teacher
    from recbole_hetcomp.run.training import load_data
    from recbole_hetcomp.trajectories.store import TrajectoryStore

    torch.set_num_threads(max(1, int(threads)))
    config = make_config(name, dataset, config_files, config_dict, cmd_args)
    return fit_teacher(load_data(config), TrajectoryStore(config["trajectory_store"]), rebuild=rebuild,
                       ray_node=ray.get_runtime_context().get_node_id())


def ray_teacher_runner(address=None):
    """For :func:`recbole_hetcomp.run.pipeline.run_pipeline`'s ``teacher_runner``: teachers as
    Ray tasks sized by the run's ``teacher_cpus`` / ``teacher_gpus``, on a local Ray or the cluster
    at ``address``."""

    def runner(base):
        return RayTeachers(base["teacher_cpus"], base["teacher_gpus"]), ray_session(address)

    return runner


class RayTeachers:
    """Trains teachers as Ray tasks with ``cpus`` CPUs and ``gpus`` GPUs each (call inside a
    :func:`ray_session`)."""

    def __init__(self, cpus=1, gpus=0):
        self.cpus, self.gpus = max(1, int(cpus)), float(gpus or 0)

    def fit(self, dataset, teachers, config_files, config_dict, args_for, store_root, rebuild):
        import ray

        from recbole_hetcomp.config import make_config

        files = [str(Path(f).resolve()) for f in config_files or []]
        tasks = []
        for name in teachers:
            config = make_config(name, dataset, files, config_dict, args_for[name])
            fixed = {**(config_dict or {}), **absolute_paths(config), "trajectory_store": str(Path(store_root).resolve())}
            remote = ray.remote(num_cpus=self.cpus, num_gpus=gpus_for(config, self.gpus),
                                max_retries=TEACHER_RETRIES, retry_exceptions=False)(_fit_teacher_task)
            tasks.append(remote.remote(name, dataset, files, fixed, args_for[name], rebuild, self.cpus))
            logger.info(f"teacher {name}: submitted as a Ray task ({self.cpus} CPU, {gpus_for(config, self.gpus)} GPU)")
        try:
            return ray.get(tasks)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            raise RuntimeError(f"a teacher's Ray task failed: {type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayError as e:  # e.g. its worker or node died more often than it is retried
            raise RuntimeError(f"a teacher's Ray task did not complete (retried up to {TEACHER_RETRIES} times): "
                               f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
