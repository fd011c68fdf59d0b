"""Ensemble quality: the teachers' ensemble under other weights and importance functions.

    python benchmarks/ensemble_variants.py [--dataset citeulike-t] [--seed 2021]
                                           [--citeulike PATH] [--threads N]

The student is distilled from the ensemble, so an ensemble below its best teacher caps what
"the student at least matches the best single teacher" can reach. This script re-uses the
teachers of the accuracy run of ``--seed`` (its trajectory store; teachers missing there are
trained first, as the pipeline would) and evaluates, under RecBole's protocol, the ensemble
with: the defaults (equal weights, exp importance, tau = 10); each teacher left out (weight
0); weights proportional to each teacher's validation Recall@50; tau 5 and 20; reciprocal-rank
fusion. Variants are compared on validation Recall@50 (the selection metric); test metrics are
reported beside it, never used to choose. No student is trained.
Writes ``benchmarks/results/ensemble_variants_<dataset>.{json,md}``.
"""

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import CITEULIKE, RESULTS, machine, pipeline_settings  # noqa: E402

from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402

SELECT = "recall@50"


def variants(teachers):
    """(label, config overrides) given {teacher: validation Recall@50}."""
    best = max(teachers.values())
    out = [("equal weights, exp tau=10 (default)", {})]
    out += [(f"without {name}", {"teacher_weights": {name: 0.0}}) for name in teachers]
    out.append(("weights = validation Recall@50 / best",
                {"teacher_weights": {n: round(v / best, 4) for n, v in teachers.items()}}))
    out += [("exp tau=5", {"ensemble_tau": 5.0}), ("exp tau=20", {"ensemble_tau": 20.0}),
            ("reciprocal-rank fusion (k=60)", {"ensemble_importance": "rrf"})]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="citeulike-t")
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--citeulike", default=str(CITEULIKE), help="path of CiteULike-t's users.dat")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from recbole_hetcomp.config import make_config, split_global_args
    from recbole_hetcomp.model import HetCompEnsemble
    from recbole_hetcomp.run.pipeline import build_teachers, check_same_split
    from recbole_hetcomp.run.training import evaluate_model, load_data

    teachers, config, scoped = pipeline_settings(args.dataset, args.seed, args.citeulike)
    teachers = list(teachers or make_config("HetCompEnsemble", args.dataset, None, config)["teachers"])
    rows, trajectories = build_teachers(args.dataset, teachers, None, config, scoped)
    teacher_valid = {r["name"]: r["valid"][SELECT] for r in rows}
    best_name = max(rows, key=lambda r: r["test"]["recall@20"])["name"]
    best_test = max(r["test"]["recall@20"] for r in rows)

    results = []
    data = None
    for label, over in variants(teacher_valid):
        cfg = make_config("HetCompEnsemble", args.dataset, None, {**config, **over}, split_global_args(scoped))
        if data is None:
            data = load_data(cfg)
            check_same_split(trajectories, data.fingerprint, "ensemble evaluation")
        model = HetCompEnsemble(cfg, data.train_dataset, trajectories=trajectories).to(cfg["device"])
        result = evaluate_model(model, data)  # the evaluation settings are the same for every variant
        results.append({"variant": label, "overrides": over, "valid": result["valid"], "test": result["test"]})
        print(label, result["valid"][SELECT], result["test"]["recall@20"], flush=True)

    today = date.today().isoformat()
    out = {"benchmark": "ensemble_variants", "dataset": args.dataset, "seed": args.seed, "date": today,
           "machine": machine(), "versions": library_versions(),
           "teachers": [{"name": r["name"], "valid": r["valid"], "test": r["test"]} for r in rows],
           "variants": results}
    atomic_write_text(RESULTS / f"ensemble_variants_{args.dataset}.json", json.dumps(out, indent=1) + "\n")
    chosen = max(results, key=lambda r: r["valid"][SELECT])
    lines = [f"# Ensemble variants on {args.dataset} (seed {args.seed} teachers; {today}, {machine()})", "",
             "| ensemble | valid Recall@50 | test Recall@20 | test NDCG@20 | test Recall@20 / best teacher's |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| teacher {r['name']} | {r['valid'][SELECT]:.4f} | {r['test']['recall@20']:.4f} | "
                     f"{r['test']['ndcg@20']:.4f} | {r['test']['recall@20'] / best_test:.3f} |")
    for r in results:
        mark = " (best on validation)" if r is chosen else ""
        lines.append(f"| {r['variant']}{mark} | {r['valid'][SELECT]:.4f} | {r['test']['recall@20']:.4f} | "
                     f"{r['test']['ndcg@20']:.4f} | {r['test']['recall@20'] / best_test:.3f} |")
    lines += ["", f"- Teachers and split: the accuracy benchmark's seed-{args.seed} run (its trajectory store).",
              f"- Best single teacher on test Recall@20: {best_name} ({best_test:.4f}).",
              "- Variants are chosen on validation Recall@50 only; test columns are reported, not used."]
    atomic_write_text(RESULTS / f"ensemble_variants_{args.dataset}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
