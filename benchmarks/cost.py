"""Training cost, inference and memory: HetComp against BPR, the ensemble and dense matrices.

    python benchmarks/cost.py [--dataset ml-100k] [--epochs 30] [--repeats 2] [--store DIR]

Run on a quiet machine, from the repository root. The teachers come from a trajectory store
(trained first if missing; default: the accuracy benchmark's seed-2020 store, so nothing is
retrained after ``benchmarks/accuracy.py``). Measured side by side in one run:

* **Training cost**: wall seconds per epoch of HetComp (its curriculum steps and target
  rebuilds included, evaluation excluded) against BPR with the student's embedding size on the
  same data, ``--epochs`` epochs each, median of ``--repeats``; the ratio HetComp / BPR.
* **Inference**: full-ranking milliseconds per 1,000 users of the student against the ensemble
  (every teacher reloaded from the store and timed now, plus the rank fusion), and parameters.
* **Memory**: the store's arrays per teacher against the dense U x I float32 score matrices the
  released code keeps per point (T of them); peak RSS (VmHWM) of a child process that
  trains HetComp for ``--epochs`` epochs against one that trains BPR the same way.

Writes ``benchmarks/results/cost.{json,md}``.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import machine  # noqa: E402  (benchmarks/timing.py)

from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.trajectories.store import ARRAY_FILES, library_versions  # noqa: E402

QUIET = {"show_progress": False, "state": "ERROR", "seed": 2020}


def teachers_and_data(dataset, store, teachers=None):
    from recbole_hetcomp.config import make_config
    from recbole_hetcomp.run.pipeline import build_teachers
    from recbole_hetcomp.run.training import load_data

    base = make_config("HetComp", dataset, config_dict={**QUIET, "trajectory_store": store})
    names = list(teachers or base["teachers"])
    _, trajectories = build_teachers(dataset, names, config_dict={**QUIET, "trajectory_store": store})
    return names, trajectories, load_data(base)


def timed_fit(data, epochs, model_kwargs=None):
    """Seconds of ``epochs`` training epochs, without evaluation."""
    from recbole.utils import init_seed

    from recbole_hetcomp.registry import get_model, get_trainer
    from recbole_hetcomp.run.training import checkpointed

    config = data.config
    config["epochs"], config["eval_step"] = epochs, epochs + 1
    config["checkpoint_dir"] = tempfile.mkdtemp(prefix="cost-")
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, data.train_dataset, **(model_kwargs or {})).to(config["device"])
    trainer = checkpointed(get_trainer(config["MODEL_TYPE"], config["model"]))(config, model)
    start = time.perf_counter()
    trainer.fit(data.train, None, saved=False, show_progress=False)
    return time.perf_counter() - start


def student_data(dataset, model, dim, store):
    from recbole_hetcomp.config import make_config
    from recbole_hetcomp.run.training import load_data

    return load_data(make_config(model, dataset, config_dict={**QUIET, "embedding_size": dim,
                                                               "trajectory_store": store}))


def teacher_inference_ms(name, dataset, store_root, traj):
    """A teacher's full-ranking time and its store's sizes. :func:`teachers_and_data` re-used it from the store,
    which timed it again here, on this machine, from its stored weights (``run/teachers.py``)."""
    from recbole_hetcomp.config import make_config
    from recbole_hetcomp.run.training import load_data
    from recbole_hetcomp.trajectories.store import TrajectoryStore, teacher_key

    if traj.meta.get("infer_ms_from") != "this run":
        raise SystemExit(f"{name}: its stored model could not be timed on this machine (see the warning above); "
                         "delete its directory in the store and train it again")
    data = load_data(make_config(name, dataset, config_dict={**QUIET, "trajectory_store": store_root}))
    folder = TrajectoryStore(store_root).path(dataset, name, teacher_key(data.config, data.fingerprint))
    arrays = sum((folder / f).stat().st_size for f in ARRAY_FILES)
    return {"teacher": name, "ms_per_1k_users": traj.meta["infer_ms_per_1k_users"], "params": traj.meta["params"],
            "store_array_bytes": arrays, "weights_bytes": (folder / "model.pth").stat().st_size,
            "points": traj.n_points}


def child_rss(args, model):
    """Peak RSS (MiB) of a fresh process training ``model`` for ``args.epochs`` epochs."""
    out = subprocess.run([sys.executable, __file__, "--child", model, "--dataset", args.dataset,
                          "--epochs", str(args.epochs), "--store", args.store],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(args):
    kwargs = None
    if args.child == "HetComp":  # only the student loads the teachers' trajectories
        kwargs = {"trajectories": teachers_and_data(args.dataset, args.store)[1]}
    data = student_data(args.dataset, args.child, 6, args.store)
    seconds = timed_fit(data, args.epochs, kwargs)
    print(json.dumps({"model": args.child, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib():
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: Linux carries that across
    ``exec`` from the parent, so a child started by a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--store", default=str(ROOT / "benchmarks" / ".runs" / "ml-100k" / "trajectories"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    from recbole_hetcomp.model import HetCompEnsemble
    from recbole_hetcomp.registry import count_parameters
    from recbole_hetcomp.run.training import evaluate_model

    names, trajectories, protocol = teachers_and_data(args.dataset, args.store)
    dim = protocol.config["embedding_size"]
    hetcomp = student_data(args.dataset, "HetComp", dim, args.store)
    bpr = student_data(args.dataset, "BPR", dim, args.store)
    times = {"HetComp": [], "BPR": []}
    for _ in range(args.repeats):
        times["HetComp"].append(timed_fit(hetcomp, args.epochs, {"trajectories": trajectories}))
        times["BPR"].append(timed_fit(bpr, args.epochs))
    per_epoch = {m: statistics.median(v) / args.epochs for m, v in times.items()}
    training = {"epochs": args.epochs, "repeats": args.repeats, "s_per_epoch": per_epoch,
                "ratio_hetcomp_over_bpr": per_epoch["HetComp"] / per_epoch["BPR"]}
    print("training", training, flush=True)

    teachers = [teacher_inference_ms(n, args.dataset, args.store, t) for n, t in zip(names, trajectories)]
    ensemble = HetCompEnsemble(protocol.config, protocol.train_dataset, trajectories=trajectories).to(protocol.config["device"])
    fusion_ms = evaluate_model(ensemble, protocol, phases=(), timing=True)["infer_ms_per_1k_users"]
    from recbole.trainer import Trainer

    from recbole_hetcomp.registry import get_model
    from recbole_hetcomp.run.inference import full_ranking_ms_per_1k_users

    student = get_model("HetComp")(hetcomp.config, hetcomp.train_dataset, trajectories=trajectories)
    student_ms = full_ranking_ms_per_1k_users(Trainer(hetcomp.config, student), hetcomp.train_dataset)
    ensemble_ms = sum(t["ms_per_1k_users"] for t in teachers) + fusion_ms
    inference = {"student_ms_per_1k_users": student_ms, "student_params": count_parameters(student),
                 "ensemble_ms_per_1k_users": ensemble_ms, "fusion_ms_per_1k_users": fusion_ms,
                 "ensemble_params": sum(t["params"] for t in teachers), "teachers": len(teachers),
                 "speedup": ensemble_ms / student_ms}
    print("inference", inference, flush=True)

    n_users, n_items = protocol.train_dataset.user_num - 1, protocol.train_dataset.item_num - 1
    dense = {t["teacher"]: t["points"] * n_users * n_items * 4 for t in teachers}
    memory = {"users": n_users, "items": n_items,
              "per_teacher": [{"teacher": t["teacher"], "store_array_bytes": t["store_array_bytes"],
                               "dense_bytes": dense[t["teacher"]], "weights_bytes": t["weights_bytes"],
                               "ratio": t["store_array_bytes"] / dense[t["teacher"]]} for t in teachers]}
    rss = {m: child_rss(args, m) for m in ("HetComp", "BPR")}
    memory["peak_rss_mib"] = {m: r["peak_rss_mib"] for m, r in rss.items()}
    memory["rss_ratio_hetcomp_over_bpr"] = rss["HetComp"]["peak_rss_mib"] / rss["BPR"]["peak_rss_mib"]
    print("memory", memory, flush=True)

    out = {"benchmark": "cost", "date": date.today().isoformat(), "dataset": args.dataset, "machine": machine(),
           "versions": library_versions(), "training": training, "inference": inference, "memory": memory,
           "inference_per_teacher": teachers}
    res = ROOT / "benchmarks" / "results"
    atomic_write_text(res / "cost.json", json.dumps(out, indent=1) + "\n")
    atomic_write_text(res / "cost.md", markdown(out))
    print(markdown(out))


def markdown(out):
    tr, inf, mem = out["training"], out["inference"], out["memory"]
    lines = [f"# Training cost, inference and memory ({out['dataset']}, {out['date']}, {out['machine']})", "",
             f"## Training cost ({tr['epochs']} epochs, no evaluation, median of {tr['repeats']})", "",
             "| model | s/epoch |", "|---|---|"]
    lines += [f"| {m} (d=6) | {s:.3f} |" for m, s in tr["s_per_epoch"].items()]
    lines += ["", f"HetComp / BPR: **{tr['ratio_hetcomp_over_bpr']:.2f}x** (target <= 3x)", "",
              "## Inference (full ranking of every user)", "", "| model | params | ms / 1,000 users |", "|---|---|---|"]
    lines += [f"| {t['teacher']} | {t['params']:,} | {t['ms_per_1k_users']:.1f} |" for t in out["inference_per_teacher"]]
    lines += [f"| ensemble ({inf['teachers']} teachers + fusion {inf['fusion_ms_per_1k_users']:.1f} ms) | "
              f"{inf['ensemble_params']:,} | {inf['ensemble_ms_per_1k_users']:.1f} |",
              f"| HetComp student | {inf['student_params']:,} | {inf['student_ms_per_1k_users']:.2f} |", "",
              f"Student speed-up over the ensemble: **{inf['speedup']:.0f}x** (target >= {inf['teachers']}x, "
              "the number of teachers)", "",
              f"## Memory (U = {mem['users']:,} users, I = {mem['items']:,} items)", "",
              "| teacher | store arrays (bytes) | dense T x U x I float32 (bytes) | ratio | weights (bytes) |",
              "|---|---|---|---|---|"]
    lines += [f"| {t['teacher']} | {t['store_array_bytes']:,} | {t['dense_bytes']:,} | {t['ratio']:.2%} | "
              f"{t['weights_bytes']:,} |" for t in mem["per_teacher"]]
    rss = mem["peak_rss_mib"]
    lines += ["", "Store / dense ratio target <= 2%: the top lists alone are N / I of the dense matrices, so the "
                  "ratio falls with the catalogue size (see the CiteULike-t line in benchmarks/README.md).", "",
              f"Peak RSS of a process training {tr['epochs']} epochs: HetComp {rss['HetComp']:.0f} MiB "
              f"(teachers' trajectories loaded), BPR {rss['BPR']:.0f} MiB; ratio "
              f"{mem['rss_ratio_hetcomp_over_bpr']:.2f}x."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
