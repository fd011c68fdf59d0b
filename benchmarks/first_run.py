"""A user's first run, timed: ``python run_recbole_hetcomp.py --dataset <name> --data_path=data/`` in a fresh working
directory (no stored teachers, no converted data), and its stage breakdown.

    python benchmarks/ml1m_data.py                          # once: data/ml-1m.zip from the real ml-1m
    python benchmarks/first_run.py [--dataset ml-1m] [-- extra CLI arguments]

The command runs as a child process, exactly as a user types it (only ``--data_path`` points at a fresh copy of
``data/<dataset>.zip``, so the conversion is part of the run). Its wall time, the peak resident memory of the child
and the stage times it reports in ``results.json`` (``stages``, ``total_s``, ``dataset_builds``) go to
``results/first_run_<dataset>.{json,md}`` with each model's epochs, seconds per epoch and test metrics. The working
directory is kept in ``benchmarks/.runs/first-run-<dataset>/`` (its trajectory store lets later benchmarks reuse
the teachers). Nothing else should run on the machine meanwhile: the figures are times.
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
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


def minutes(s):
    return f"{s / 60:.1f} min" if s is not None else "-"


def markdown(out):
    lines = [f"# First run on {out['dataset']} ({out['date']}, {out['machine']})", "",
             f"Command: `{out['command']}` in a fresh directory (no stored teachers; the archive converted in the run). "
             f"Regenerate: `python benchmarks/first_run.py --dataset {out['dataset']}`.", "",
             f"Versions: {out['versions']}", "",
             f"**Wall time {minutes(out['wall_s'])}** (goal: {out['goal_min']} min: "
             f"{'met' if out['wall_s'] <= out['goal_min'] * 60 else 'not met'}); exit {out['exit']}; peak RSS "
             f"{out['peak_rss_mib']:,} MiB; RecBole dataset builds: {out.get('dataset_builds', '-')}.", "",
             "| stage | time | share |", "|---|---|---|"]
    total = out["wall_s"]
    for stage in out.get("stages", []):
        lines.append(f"| {stage['stage']} | {minutes(stage['s'])} | {stage['s'] / total:.0%} |")
    accounted = sum(s["s"] for s in out.get("stages", []))
    lines.append(f"| the rest: checks, data conversion and build, results | {minutes(total - accounted)} | "
                 f"{(total - accounted) / total:.0%} |")
    lines += ["", "| model | kind | epochs | s / epoch | training | Recall@20 | NDCG@20 |", "|---|---|---|---|---|---|---|"]
    for r in out.get("rows", []):
        test, epochs, train = r.get("test") or {}, r.get("epochs"), r.get("train_s")
        per = f"{train / epochs:.2f}" if epochs and train else "-"
        recall, ndcg = test.get("recall@20"), test.get("ndcg@20")
        lines.append(f"| {r['name']} | {r['kind']} | {epochs or '-'} | {per} | {minutes(train)} | "
                     f"{'-' if recall is None else f'{recall:.4f}'} | {'-' if ndcg is None else f'{ndcg:.4f}'} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--goal", type=float, default=60, help="the wall-time goal in minutes (reported against)")
    p.add_argument("extra", nargs="*", help="more CLI arguments (after --)")
    args = p.parse_args()
    work = ROOT / "benchmarks" / ".runs" / f"first-run-{args.dataset}"
    if work.exists():
        shutil.rmtree(work)
    (work / "data").mkdir(parents=True)
    archive = ROOT / "data" / f"{args.dataset}.zip"
    if archive.is_file():
        shutil.copy(archive, work / "data" / archive.name)
    command = [sys.executable, str(ROOT / "run_recbole_hetcomp.py"), "--dataset", args.dataset, "--data_path=data/",
               *args.extra]
    shown = " ".join(["python run_recbole_hetcomp.py", *command[2:]])
    print(shown, flush=True)
    start = time.perf_counter()
    with open(work / "run.log", "w") as log:
        code = subprocess.call(command, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024  # KiB on Linux
    out = {"dataset": args.dataset, "date": date.today().isoformat(), "machine": machine(),
           "versions": library_versions(), "command": shown, "exit": code, "wall_s": round(wall, 1),
           "goal_min": args.goal, "peak_rss_mib": int(peak)}
    results = work / "results" / args.dataset / "results.json"
    if results.is_file():
        payload = json.loads(results.read_text())
        out.update(stages=payload.get("stages", []), total_s=payload.get("total_s"),
                   dataset_builds=payload.get("dataset_builds"),
                   rows=[{k: r.get(k) for k in ("name", "kind", "epochs", "s_per_epoch", "train_s", "test", "valid",
                                                "params")} for r in payload["rows"]])
    atomic_write_text(RESULTS / f"first_run_{args.dataset}.json", json.dumps(out, indent=1) + "\n")
    atomic_write_text(RESULTS / f"first_run_{args.dataset}.md", markdown(out))
    print(markdown(out))
    return code


if __name__ == "__main__":
    sys.exit(main())
