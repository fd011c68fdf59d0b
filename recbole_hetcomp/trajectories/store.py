"""The trajectory store: one teacher's recorded ranking knowledge on disk.

Layout: ``<root>/<dataset>/<teacher>-<key>/`` holding

- ``top.npy``         int32 [T, U, N]  top-N unobserved items per trajectory point and user
- ``obs_items.npy``   int32 [nnz]      each user's training items ranked by the final point
- ``obs_indptr.npy``  int64 [U + 1]    CSR offsets into ``obs_items`` (rows of the training matrix)
- ``model.pth``       the converged teacher's weights (state_dict), for re-use and timing
- ``meta.json``       shapes, milestones, validation score at each point, the teacher's
                      metrics, library versions, and a sha256 of every file above

Size is O(T x U x N + training interactions), never O(U x I). :meth:`TrajectoryStore.load` maps
the arrays (copy-on-write) instead of reading them whole. A directory appears
only complete: it is written under a temporary name beside its final one and renamed.
Temporary directories (``.<teacher>-<key>.<owner>-*`` while saving, ``.train-<teacher>-<owner>-*``
while a teacher trains, ``.<teacher>-<key>.old-<owner>`` while replacing) carry their owner,
``pid<PID>-h<HOST>`` (HOST hashes the host name and PID namespace). A run that is killed
leaves them behind; :meth:`TrajectoryStore.clean_stale` removes those whose owner is on this
host and no longer running, and never touches one of a live process, of another host or
without an owner (remove those by hand once no run uses the store).
``key`` hashes the teacher's whole result-relevant configuration together with the
fingerprint of the data split, so a different dataset, split or setting never matches.
"""

import functools
import glob
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("recbole_hetcomp")

FORMAT_VERSION = 1
ARRAY_FILES = ("top.npy", "obs_items.npy", "obs_indptr.npy")

# The student's own keys (properties/model/HetComp.yaml): no teacher reads them, so tuning the
# student never retrains a teacher.
STUDENT_ONLY_KEYS = frozenset({
    "hetcomp_k", "hetcomp_p", "dkc", "akt", "dkc_alpha", "dkc_period", "dkc_start", "dkc_k",
    "overall_loss_weight", "rank_loss_weight", "score_clamp", "init_std", "hetcomp_batch", "hetcomp_batch_size",
    "student",
    "kd_method", "kd_weight", "rd_lambda", "rd_mu", "rd_warmup", "cldrd_stage_epochs", "cldrd_candidates",
    "dcd_sample", "dcd_eps", "dcd_refresh", "dcd_rrd", "cldrd_base",
})

# Config keys that change where or how verbosely a run happens, never a teacher's result.
# (metric_decimal_place is not one: RecBole rounds metrics before early stopping.)
_NON_RESULT_KEYS = STUDENT_ONLY_KEYS | frozenset({
    "gpu_id", "use_gpu", "device", "state", "data_path", "checkpoint_dir", "show_progress",
    "save_dataset", "dataset_save_path", "save_dataloaders", "dataloaders_save_path",
    "log_wandb", "wandb_project", "worker", "eval_batch_size", "predict_batch_size",
    "loss_decimal_place",
    "single_spec", "local_rank", "world_size", "ip", "port", "nproc",
    "offset", "trajectory_store", "teachers", "teacher_weights", "ensemble_importance",
    "ensemble_tau", "ensemble_rrf_k", "ensemble_power", "rebuild_teachers",
    "ensemble_fit", "ensemble_fit_method", "ensemble_fit_metric", "ensemble_fit_grid", "ensemble_fit_max_steps",
    "ensemble_fit_users", "ensemble_fit_bags",
    "dataset_archive", "dataset_download",  # the split's fingerprint covers the data itself
    "tune_cpus_per_trial", "tune_gpus_per_trial", "tune_grace_period", "tune_reduction_factor",
    "tune_max_failures", "tune_max_concurrent_trials", "teacher_cpus", "teacher_gpus",
})


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StoreError(RuntimeError):
    """A trajectory store that is missing, damaged or does not belong to this run."""


@dataclass
class Trajectory:
    """One teacher's trajectory: ``top[v, u]`` is user u's top-N list at point v."""

    teacher: str
    top: torch.Tensor          # int32 [T, U, N]
    obs_items: torch.Tensor    # int32 [nnz]
    obs_indptr: torch.Tensor   # int64 [U + 1]
    meta: dict = field(default_factory=dict)

    @property
    def n_points(self):
        return self.top.shape[0]

    @property
    def n_users(self):
        return self.top.shape[1]

    @property
    def top_n(self):
        return self.top.shape[2]

    def at_milestones(self, fractions):
        """The same trajectory keeping only the points of ``fractions``, a subset of the recorded
        milestones. Each point is chosen per fraction (the first evaluation reaching it), so the
        subset equals what recording with ``fractions`` alone would have kept."""
        recorded = [float(f) for f in self.meta["milestones"]]
        missing = [f for f in fractions if float(f) not in recorded]
        if missing:
            raise ValueError(f"teacher {self.teacher} was recorded at milestones {recorded}, not {missing}: "
                             "record the teachers with every milestone to be used")
        index = [recorded.index(float(f)) for f in fractions]
        meta = dict(self.meta, milestones=[recorded[i] for i in index])
        for key in ("milestone_epochs", "milestone_valid_scores"):
            if key in meta:
                meta[key] = [self.meta[key][i] for i in index]
        return replace(self, top=self.top[index], meta=meta)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return str(obj)


def result_config(config):
    """The part of a RecBole config that can change a teacher's result, as a plain dict."""
    items = config.final_config_dict.items() if hasattr(config, "final_config_dict") else dict(config).items()
    return {k: v for k, v in sorted(items) if k not in _NON_RESULT_KEYS}


def teacher_key(config, fingerprint, extra=None):
    """Content hash (16 hex digits) naming a teacher's store directory."""
    payload = json.dumps(
        {"config": result_config(config), "split": fingerprint, "extra": extra or {},
         "format": FORMAT_VERSION},
        sort_keys=True, default=_json_default,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def split_fingerprint(train_dataset, valid_dataset, test_dataset):
    """sha256 of the internal ids of every split and of the id -> token maps."""
    h = hashlib.sha256()
    uid, iid = train_dataset.uid_field, train_dataset.iid_field
    for name, ds in (("train", train_dataset), ("valid", valid_dataset), ("test", test_dataset)):
        h.update(name.encode())
        for fld in (uid, iid):
            h.update(np.ascontiguousarray(ds.inter_feat[fld].numpy().astype(np.int64)).tobytes())
    for fld in (uid, iid):
        h.update("\x00".join(map(str, train_dataset.field2id_token[fld])).encode())
    return h.hexdigest()


def library_versions():
    import recbole

    from recbole_hetcomp import __version__

    # torch's CPU kernels (AVX2, AVX512, ...) round differently: a teacher with an MLP (NeuMF,
    # MultiVAE) trained on one set differs in its last bits from one trained on another.
    return {"recbole_hetcomp": __version__, "recbole": recbole.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "torch_cpu_kernels": torch.backends.cpu.get_cpu_capability()}


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@functools.lru_cache(maxsize=None)
def _host_id():
    """8 hex digits naming this host and PID namespace (containers sharing a disk differ)."""
    ident = platform.node()
    try:
        ident += os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    return hashlib.sha256(ident.encode()).hexdigest()[:8]


def owner_tag():
    """``pid<PID>-h<HOST>``: put in a temporary directory's name, it says who may still use it."""
    return f"pid{os.getpid()}-h{_host_id()}"


_OWNER = re.compile(r"pid(\d+)-h([0-9a-f]{8})")


def _running(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    return True


def stale_owner(name):
    """True when the temporary directory ``name`` belongs to a process of this host that has ended."""
    match = _OWNER.search(name)
    return bool(match) and match.group(2) == _host_id() and not _running(int(match.group(1)))


class TrajectoryStore:
    """Directory-per-teacher store of :class:`Trajectory` objects."""

    def __init__(self, root):
        self.root = Path(root)

    def temp_dir(self, dataset, prefix):
        """A new private directory ``<root>/<dataset>/<prefix><owner>-<random>``."""
        folder = self.root / dataset
        folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=folder))

    def remove_own_temp(self, dataset, prefix):
        """Remove this process's temporary directories ``<prefix><owner>-*`` however far their
        creation got (an interruption can land inside ``mkdtemp``)."""
        for entry in (self.root / dataset).glob(f"{glob.escape(prefix)}{owner_tag()}-*"):
            shutil.rmtree(entry, ignore_errors=True)

    def clean_stale(self, dataset):
        """Remove the temporary directories that killed runs left in ``<root>/<dataset>`` (see the
        module docstring for which); returns their paths."""
        folder = self.root / dataset
        removed = []
        if not folder.is_dir():
            return removed
        for entry in folder.iterdir():
            if entry.name.startswith(".") and entry.is_dir() and stale_owner(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
                logger.info(f"removed {entry}, left by an interrupted run")
        return removed

    def path(self, dataset, teacher, key):
        return self.root / dataset / f"{teacher}-{key}"

    def exists(self, dataset, teacher, key):
        return (self.path(dataset, teacher, key) / "meta.json").is_file()

    def save(self, dataset, key, traj, model_state=None, replace=False):
        """Write ``traj`` atomically; returns the final directory.

        An existing directory is kept (another run finished the same teacher first) unless
        ``replace`` is true: then it is moved aside and deleted once the new one is in place,
        so the final name never holds a partial store.
        """
        final = self.path(dataset, traj.teacher, key)
        prefix, old = f".{final.name}.", None
        try:
            tmp = self.temp_dir(dataset, prefix)
            os.chmod(tmp, 0o755)
            arrays = {
                "top.npy": traj.top.to(torch.int32).cpu().numpy(),
                "obs_items.npy": traj.obs_items.to(torch.int32).cpu().numpy(),
                "obs_indptr.npy": traj.obs_indptr.to(torch.int64).cpu().numpy(),
            }
            files = {}
            for name, arr in arrays.items():
                np.save(tmp / name, arr, allow_pickle=False)
                files[name] = {"sha256": _sha256(tmp / name), "shape": list(arr.shape), "dtype": str(arr.dtype)}
            if model_state is not None:
                torch.save(model_state, tmp / "model.pth")
                files["model.pth"] = {"sha256": _sha256(tmp / "model.pth")}
            meta = dict(traj.meta)
            meta.update({"format_version": FORMAT_VERSION, "key": key, "dataset": dataset,
                         "teacher": traj.teacher, "files": files, "versions": library_versions()})
            with open(tmp / "meta.json", "w") as f:
                json.dump(meta, f, indent=1, sort_keys=True, default=_json_default)
                f.flush()
                os.fsync(f.fileno())
            old = None
            # A final directory without meta.json was never written by save() (which renames
            # complete directories only): someone broke it; it is replaced like a rebuild.
            if final.exists() and (replace or not (final / "meta.json").is_file()):
                old = final.with_name(f".{final.name}.old-{owner_tag()}")
                os.rename(final, old)
            try:
                os.rename(tmp, final)
            except OSError:
                if not self.exists(dataset, traj.teacher, key):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another run finished the same teacher first
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            traj.meta = meta
            return final
        except BaseException:  # an error or an interruption (Ctrl-C) at any point
            if old is not None and old.exists():
                if final.exists():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    try:
                        os.rename(old, final)  # an interrupted replacement keeps the previous store
                    except OSError:
                        pass
            self.remove_own_temp(dataset, prefix)
            raise

    def load(self, dataset, teacher, key, fingerprint=None):
        """Read and verify a trajectory; raises :class:`StoreError` naming what is wrong."""
        path = self.path(dataset, teacher, key)
        hint = f"delete {path} or run with --rebuild_teachers"
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise StoreError(f"no trajectory store for teacher {teacher} at {path}")
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise StoreError(f"trajectory store {path}: meta.json is unreadable ({e}); {hint}") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise StoreError(f"trajectory store {path} has format version {meta.get('format_version')}, "
                             f"this code reads version {FORMAT_VERSION}; {hint}")
        for name, want in (("key", key), ("dataset", dataset), ("teacher", teacher)):
            if meta.get(name) != want:
                raise StoreError(f"trajectory store {path} belongs to {name} {meta.get(name)!r}, not {want!r}; {hint}")
        if fingerprint is not None and meta.get("split_fingerprint") != fingerprint:
            raise StoreError(f"trajectory store {path} was built on another data split "
                             f"(dataset files or split settings changed); {hint}")
        arrays = {}
        for name in ARRAY_FILES:
            info = meta.get("files", {}).get(name)
            file = path / name
            if info is None or not file.is_file():
                raise StoreError(f"trajectory store {path}: {name} is missing; {hint}")
            if _sha256(file) != info["sha256"]:
                raise StoreError(f"trajectory store {path}: {name} is damaged (checksum mismatch); {hint}")
            # memory-mapped copy-on-write: pages are read when used and shared with the page cache, so a
            # trajectory that is only stacked or sliced never lives twice in memory; writes stay private
            arr = np.load(file, allow_pickle=False, mmap_mode="c")
            if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
                raise StoreError(f"trajectory store {path}: {name} has shape {arr.shape}, expected {info['shape']}; {hint}")
            arrays[name] = torch.from_numpy(arr)
        top = arrays["top.npy"]
        if arrays["obs_indptr.npy"].numel() != top.shape[1] + 1:
            raise StoreError(f"trajectory store {path}: obs_indptr does not match {top.shape[1]} users; {hint}")
        return Trajectory(teacher, top, arrays["obs_items.npy"], arrays["obs_indptr.npy"], meta)

    def load_model_state(self, dataset, teacher, key):
        path = self.path(dataset, teacher, key) / "model.pth"
        # Our own file, written by save() above and checked against meta.json: safe to unpickle.
        return torch.load(path, map_location="cpu", weights_only=False)

    def fit_path(self, dataset, key):
        """Where the ensemble fit of ``key`` (a hash of its teachers, split and settings) is kept."""
        return self.root / dataset / "fits" / f"fit-{key}.json"

    def load_fit(self, dataset, key):
        """A stored ensemble fit (a dict), or None when there is none or it cannot be read."""
        path = self.fit_path(dataset, key)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning(f"ensemble fit {path} is unreadable ({e}): fitting again")
            return None
        return record if isinstance(record, dict) and record.get("key") == key else None

    def save_fit(self, dataset, key, record):
        """Write an ensemble fit atomically (temporary file, then rename); returns its path."""
        path = self.fit_path(dataset, key)
        atomic_write_text(path, json.dumps({**record, "key": key}, indent=1, sort_keys=True,
                                           default=_json_default) + "\n")
        return path

    def size_bytes(self, dataset, teacher, key, include_model=False):
        path = self.path(dataset, teacher, key)
        return sum(p.stat().st_size for p in path.iterdir()
                   if p.is_file() and (include_model or p.name != "model.pth"))
