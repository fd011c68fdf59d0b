"""Trajectory recording overhead: teacher training with and without recording, side by side.

    python benchmarks/recording_overhead.py [--teachers BPR,LightGCN,MultiVAE] [--epochs 20] [--repeats 2]

Each teacher trains the same number of epochs (evaluation every epoch, no early stop) with
RecBole's trainer and with our recording trainer, alternating, on ml-100k; the ratio of
median fit() times is the overhead. Writes benchmarks/results/recording_overhead.{json,md}.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import machine  # noqa: E402  (benchmarks/timing.py)

from recbole_hetcomp.config import make_config  # noqa: E402
from recbole_hetcomp.registry import get_model, get_trainer  # noqa: E402
from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.run.training import checkpointed, load_data  # noqa: E402
from recbole_hetcomp.trainer import trajectory_trainer  # noqa: E402
from recbole_hetcomp.trajectories.recorder import TrajectoryRecorder  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402


def fit_seconds(data, record, workdir):
    config = data.config
    config["checkpoint_dir"] = workdir
    name = config["model"]
    model = get_model(name)(config, data.train_dataset).to(config["device"])
    base = get_trainer(config["MODEL_TYPE"], name)
    if record:
        trainer = trajectory_trainer(base)(config, model)
        trainer.recorder = TrajectoryRecorder(data.train_dataset.user_num, config["trajectory_top_n"],
                                              config["trajectory_milestones"])
    else:
        trainer = checkpointed(base)(config, model)
    start = time.perf_counter()
    trainer.fit(data.train, data.valid, saved=True, show_progress=False)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--teachers", default="BPR,LightGCN,MultiVAE")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.teachers.split(","):
            cfg = make_config(name, args.dataset, config_dict={
                "epochs": args.epochs, "stopping_step": 10 ** 6, "eval_step": 1,
                "show_progress": False, "state": "ERROR"})
            data = load_data(cfg)
            times = {"plain": [], "recording": []}
            for _ in range(args.repeats):
                for mode in ("plain", "recording"):
                    times[mode].append(fit_seconds(data, mode == "recording", tmp))
            plain, rec = statistics.median(times["plain"]), statistics.median(times["recording"])
            rows.append({"teacher": name, "epochs": args.epochs, "plain_s": round(plain, 3),
                         "recording_s": round(rec, 3), "ratio": round(rec / plain, 3)})
            print(rows[-1], flush=True)
    out = {"benchmark": "recording_overhead", "date": date.today().isoformat(), "dataset": args.dataset,
           "machine": machine(), "versions": library_versions(), "rows": rows}
    res = ROOT / "benchmarks" / "results"
    atomic_write_text(res / "recording_overhead.json", json.dumps(out, indent=1) + "\n")
    lines = [f"# Trajectory recording overhead ({args.dataset}, {date.today().isoformat()}, {out['machine']})", "",
             "| teacher | epochs | plain fit s | recording fit s | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {r['teacher']} | {r['epochs']} | {r['plain_s']} | {r['recording_s']} | {r['ratio']} |" for r in rows]
    atomic_write_text(res / "recording_overhead.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
