"""Student size: how much of the gap to the ensemble is the d = 6 student's size?

    python benchmarks/student_size.py [--dataset citeulike-t] [--seeds 2021] [--sizes 16]
                                      [--citeulike PATH] [--threads N] [--only-aggregate]

For each seed and size d, one pipeline run as in ``accuracy.py`` (same split, same teachers,
taken from the accuracy run's trajectory store when it is there) with the student's
``embedding_size`` set to d (``--HetComp.embedding_size=d``; the teachers never see it) and no
ablations: the ensemble, HetComp at d and the MF baseline at the same d. Runs go to
``benchmarks/.runs/<dataset>/size-d<d>-seed-<seed>/`` and their rows are recorded in
``benchmarks/results/runs/<dataset>/student-size/seed-<seed>-d<d>.json`` (committed). The
table puts each recorded size beside the d = 6 student of the accuracy record of the same seed
(``results/runs/<dataset>/seed-<seed>.json``): ``benchmarks/results/student_size.{md,json}``.
"""

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import CITEULIKE, RECORDS, RESULTS, RUNS, record_run, row_key, run_one  # noqa: E402
from recbole_hetcomp.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.store import library_versions  # noqa: E402

METRICS = ("recall@20", "ndcg@20")


def size_dir(dataset, seed, dim):
    return RUNS / dataset / f"size-d{dim}-seed-{seed}"


def size_record(dataset, seed, dim):
    return RECORDS / dataset / "student-size" / f"seed-{seed}-d{dim}.json"


def table(dataset):
    """One line per recorded (seed, size), the accuracy record's d = 6 line of each seed first."""
    lines = []
    for path in sorted((RECORDS / dataset / "student-size").glob("seed-*-d*.json")):
        rec = json.loads(path.read_text())
        base = RECORDS / dataset / f"seed-{rec['seed']}.json"
        sources = ([(6, json.loads(base.read_text()))] if base.exists() else []) + [(rec["embedding_size"], rec)]
        for dim, r in sources:
            rows = {row_key(x): x for x in r["rows"]}
            student = rows["HetComp"]
            mf = next(x for x in r["rows"] if x["kind"] == "baseline")
            teachers = [x for x in r["rows"] if x["kind"] == "teacher"]
            best = max(teachers, key=lambda x: x["test"]["recall@20"])
            line = {"seed": rec["seed"], "embedding_size": dim, "params": student["params"],
                    "student": {m: student["test"][m] for m in METRICS},
                    "ensemble": {m: rows["Ensemble"]["test"][m] for m in METRICS},
                    "best_teacher": best["name"], "best_teacher_recall@20": best["test"]["recall@20"],
                    "mf": {m: mf["test"][m] for m in METRICS}, "date": r.get("date")}
            if line not in lines:
                lines.append(line)
    return lines


def markdown(dataset, lines):
    out = [f"## {dataset}", "",
           "| seed | embedding_size | params | HetComp Recall@20 | NDCG@20 | / ensemble | / best teacher | "
           "MF w/o KD, same size: Recall@20 | HetComp / MF | run |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for x in lines:
        s, e, m = x["student"]["recall@20"], x["ensemble"]["recall@20"], x["mf"]["recall@20"]
        out.append(f"| {x['seed']} | {x['embedding_size']} | {x['params']:,} | {s:.4f} | {x['student']['ndcg@20']:.4f} "
                   f"| {s / e:.3f} (ensemble {e:.4f}) | {s / x['best_teacher_recall@20']:.3f} ({x['best_teacher']} "
                   f"{x['best_teacher_recall@20']:.4f}) | {m:.4f} | {s / m:.2f} | {x['date']} |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="citeulike-t")
    p.add_argument("--seeds", default="2021")
    p.add_argument("--sizes", default="16")
    p.add_argument("--citeulike", default=str(CITEULIKE), help="path of CiteULike-t's users.dat")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--only-aggregate", action="store_true", help="do not run, tabulate recorded runs only")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.only_aggregate:
        for seed in (int(s) for s in args.seeds.split(",") if s):
            for dim in (int(d) for d in args.sizes.split(",") if d):
                out = size_dir(args.dataset, seed, dim)
                if not (out / "results.json").exists():
                    print(f"== {args.dataset} seed {seed} embedding_size {dim}", flush=True)
                    run_one(args.dataset, seed, args.citeulike, ablations=False, student_dim=dim, out=out)
                record_run(out, args.dataset, seed, size_record(args.dataset, seed, dim), embedding_size=dim)
    datasets = sorted(p.name for p in RECORDS.iterdir() if (p / "student-size").is_dir()) if RECORDS.is_dir() else []
    results = {d: table(d) for d in datasets}
    atomic_write_text(RESULTS / "student_size.json", json.dumps(
        {"benchmark": "student_size", "aggregated": date.today().isoformat(), "versions": library_versions(),
         "results": results}, indent=1) + "\n")
    text = ["# Student size: HetComp at several embedding sizes, same teachers and split", "",
            "Each line: one seed's test metrics; d = 6 is the accuracy benchmark's run of that seed. "
            "See benchmarks/README.md.", ""] + [markdown(d, lines) + "\n" for d, lines in results.items()]
    atomic_write_text(RESULTS / "student_size.md", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
