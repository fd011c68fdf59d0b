"""Validation quality against wall time, per teacher and setting: what ``properties/dataset/<dataset>.yaml``'s
per-model settings are chosen from.

    python benchmarks/ml1m_data.py                    # once: data/ml-1m.zip from the real ml-1m
    python benchmarks/teacher_curves.py [--dataset ml-1m] [--cap 300] [--only LightGCN,CML]

Each candidate (a teacher and the settings it changes from RecBole's defaults) trains as the pipeline trains it
(the same data split, built once for all of them; RecBole's trainer, ``valid_metric`` checked every ``eval_step``
epochs) until it stops early or ``--cap`` seconds of training and validation have passed, whichever comes first.
Every validation is recorded as (epoch, seconds since the start of training, ``valid_metric``). Read two curves
at equal time: the setting that is higher at a time is better for a run that can spend that time. Nothing is
tested or stored. Results: ``results/teacher_curves_<dataset>.{json,md}``.
"""

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from timing import machine  # noqa: E402

from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

#: (teacher, settings changed from the defaults): RecBole's defaults first, then the faster candidates.
CANDIDATES = {
    "LightGCN": [{}, {"train_batch_size": 16384}, {"train_batch_size": 16384, "learning_rate": 0.005}],
    "CML": [{}, {"train_batch_size": 8192, "learning_rate": 0.004}],
    "NeuMF": [{}, {"train_batch_size": 8192, "learning_rate": 0.004}],
    "BPR": [{}, {"train_batch_size": 8192, "learning_rate": 0.004}],
    "MultiVAE": [{}],
}


class _Stop(Exception):
    """Raised from the validation callback once the time cap has passed (RecBole's fit has no stop hook)."""


def curve(teacher, settings, dataset, data_path, cap):
    from recbole_hetcomp.config import make_config
    from recbole_hetcomp.run import training

    config = make_config(teacher, dataset, config_dict={"data_path": data_path, "state": "ERROR", "show_progress": False,
                                                            **settings})
    data = training.load_data(config)
    points, start = [], [None]

    def on_evaluation(epoch, score, _result):
        points.append({"epoch": epoch, "s": round(time.perf_counter() - start[0], 1), "score": round(score, 4)})
        if points[-1]["s"] >= cap:
            raise _Stop

    def prepare(_trainer):
        start[0] = time.perf_counter()

    stopped = "early stop"
    with tempfile.TemporaryDirectory() as workdir:
        try:
            training.train_model(data, workdir, prepare=prepare, on_evaluation=on_evaluation)
        except _Stop:
            stopped = f"cap {cap} s"
    best = max(points, key=lambda p: p["score"]) if points else None
    return {"teacher": teacher, "settings": settings, "valid_metric": config["valid_metric"],
            "eval_step": config["eval_step"], "train_batch_size": config["train_batch_size"],
            "learning_rate": config["learning_rate"], "stopped": stopped, "points": points, "best": best}


def at(points, seconds):
    """The best score reached within ``seconds`` (None before the first validation)."""
    seen = [p["score"] for p in points if p["s"] <= seconds]
    return max(seen) if seen else None


def markdown(out):
    lines = [f"# Teacher validation quality against time ({out['dataset']}, {out['date']}, {out['machine']})", "",
             f"Regenerate: `python benchmarks/teacher_curves.py --dataset {out['dataset']} --cap {out['cap_s']}`. "
             f"Each row trains until early stopping or {out['cap_s']} s; the columns give the best "
             f"{out['runs'][0]['valid_metric'] if out['runs'] else 'validation score'} reached by that time "
             "(training plus validation).", "",
             f"Versions: {out['versions']}", ""]
    marks = [m for m in (30, 60, 120, 180, 300, 600, 900) if m <= out["cap_s"]]
    lines.append("| teacher | settings | " + " | ".join(f"{m} s" for m in marks) + " | best (epoch, s) | stopped |")
    lines.append("|---|---|" + "---|" * len(marks) + "---|---|")
    for r in out["runs"]:
        shown = ", ".join(f"{k}={v}" for k, v in r["settings"].items()) or "RecBole's defaults"
        cells = [("-" if at(r["points"], m) is None else f"{at(r['points'], m):.4f}") for m in marks]
        b = r["best"]
        best = f"{b['score']:.4f} ({b['epoch']}, {b['s']:.0f} s)" if b else "-"
        lines.append(f"| {r['teacher']} | {shown} | " + " | ".join(cells) + f" | {best} | {r['stopped']} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--data_path", default=str(ROOT / "data"))
    p.add_argument("--cap", type=int, default=300, help="seconds of training and validation per candidate")
    p.add_argument("--only", default="", help="comma-separated teachers (default: all)")
    args = p.parse_args()
    from recbole_hetcomp.run import training

    wanted = [t for t in args.only.split(",") if t] or list(CANDIDATES)
    runs = []
    with training.shared_split():
        for teacher in wanted:
            for settings in CANDIDATES[teacher]:
                runs.append(curve(teacher, settings, args.dataset, args.data_path, args.cap))
                b = runs[-1]["best"]
                print(f"{teacher} {settings}: best {b}, {runs[-1]['stopped']}", flush=True)
    out = {"dataset": args.dataset, "date": date.today().isoformat(), "machine": machine(),
           "versions": library_versions(), "cap_s": args.cap, "runs": runs}
    name = f"teacher_curves_{args.dataset}"
    old = RESULTS / f"{name}.json"
    if args.only and old.is_file():  # keep the other teachers' rows of an earlier run
        kept = [r for r in json.loads(old.read_text())["runs"] if r["teacher"] not in wanted]
        out["runs"] = kept + runs
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(out, indent=1) + "\n")
    atomic_write_text(RESULTS / f"{name}.md", markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
