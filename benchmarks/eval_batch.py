"""Full-ranking batch size: one validation pass per teacher at several ``eval_batch_size`` values.

    python benchmarks/eval_batch.py [--dataset ml-100k] [--models BPR,NeuMF,MultiVAE]
                                    [--sizes 4096,65536,262144,1048576] [--unbounded NeuMF]
                                    [--repeats 3]

RecBole counts ``eval_batch_size`` in scores: a full-ranking batch holds
``eval_batch_size // n_items`` users (at least one). Its default, 4096, gives 2 users a batch on
ml-100k's 1,683 items. Each (model, size) runs in a child process, so its peak RSS (VmHWM) is its
own. The child builds the model, untrained and seeded, times RecBole's evaluation of the
validation set (median of ``--repeats``, after one untimed pass) and checks that the metrics do
not depend on the size. NeuMF has no ``full_sort_predict``: it scores every (user, item) pair
of a batch through its MLP, ``predict_batch_size`` pairs at a time (the default); the models in
``--unbounded`` also run without that bound, as RecBole alone would (all of a batch's pairs at
once), to show what the bound saves. Run on a quiet machine, from the repository root.

Writes ``benchmarks/results/eval_batch_<dataset>.{json,md}``.
"""

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import machine, median_seconds  # noqa: E402  (benchmarks/timing.py)

from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402


def child(dataset, model, size, repeats, bounded):
    """One (model, size) in this process: seconds per validation pass, peak RSS, metrics."""
    from recbole.utils import init_seed

    from recbole_hetcomp.config import make_config
    from recbole_hetcomp.registry import get_model
    from recbole_hetcomp.run.training import evaluate_model, load_data

    settings = {"seed": 2020, "show_progress": False, "state": "ERROR", "eval_batch_size": size}
    if not bounded:
        settings["predict_batch_size"] = None
    config = make_config(model, dataset, config_dict=settings)
    data = load_data(config)
    init_seed(config["seed"], config["reproducibility"])
    net = get_model(model)(config, data.train_dataset).to(config["device"])
    result = {}

    def one_pass():
        result.update(evaluate_model(net, data, phases=("valid",))["valid"])

    seconds = median_seconds(one_pass, repeats)
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    users = max(1, size // data.train_dataset.item_num)
    print(json.dumps({"model": model, "eval_batch_size": size, "predict_batch_size": config["predict_batch_size"],
                      "users_per_batch": users, "valid_s": seconds,
                      "peak_rss_mib": hwm / 1024, "valid": result}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--models", default="BPR,NeuMF,MultiVAE")
    p.add_argument("--sizes", default="4096,65536,262144,1048576")
    p.add_argument("--unbounded", default="NeuMF", help="models also run with predict_batch_size ~ (no bound)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=3, metavar=("MODEL", "SIZE", "BOUNDED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.dataset, args.child[0], int(args.child[1]), args.repeats, args.child[2] == "1")
    rows, unbounded = [], [m for m in args.unbounded.split(",") if m]
    for model in [m for m in args.models.split(",") if m]:
        for bounded in (True, False) if model in unbounded else (True,):
            for size in [int(s) for s in args.sizes.split(",") if s]:
                out = subprocess.run([sys.executable, __file__, "--dataset", args.dataset, "--repeats",
                                      str(args.repeats), "--child", model, str(size), "1" if bounded else "0"],
                                     check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    for r in rows:  # against the same model's first row (RecBole's default batch, bounded)
        first = next(x for x in rows if x["model"] == r["model"])
        r["speedup_vs_first"] = first["valid_s"] / r["valid_s"]
        r["same_metrics_as_first"] = r["valid"] == first["valid"]
    today = date.today().isoformat()
    out = {"benchmark": "eval_batch", "date": today, "dataset": args.dataset, "machine": machine(),
           "versions": library_versions(), "repeats": args.repeats, "rows": rows}
    res = ROOT / "benchmarks" / "results"
    atomic_write_text(res / f"eval_batch_{args.dataset}.json", json.dumps(out, indent=1) + "\n")
    lines = [f"# Full-ranking batch size on {args.dataset} ({today}, {out['machine']})", "",
             "One validation pass of an untrained, seeded model; median of "
             f"{args.repeats}; peak RSS of a process that loads the data and evaluates.", "",
             "| model | eval_batch_size | users a batch | predict_batch_size | validation pass s | speed-up | "
             "peak RSS MiB | same metrics |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bound = "-" if r["predict_batch_size"] is None else f"{r['predict_batch_size']:,}"
        lines.append(f"| {r['model']} | {r['eval_batch_size']:,} | {r['users_per_batch']} | {bound} | {r['valid_s']:.3f} | "
                     f"{r['speedup_vs_first']:.2f}x | {r['peak_rss_mib']:.0f} | "
                     f"{'yes' if r['same_metrics_as_first'] else 'no'} |")
    atomic_write_text(res / f"eval_batch_{args.dataset}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
