"""Loss weights under Adam: how much of the trained student's gradient is weight decay?

    python benchmarks/loss_weights.py

HetComp multiplies its set-level loss by ``overall_loss_weight`` (0.01) and its list-level loss
by ``rank_loss_weight`` (0.005), and RecBole trains it with Adam, whose ``weight_decay`` (1e-5)
adds lambda * theta to the gradient. Adam's step m / (sqrt(v) + eps) does not change when the
gradient is multiplied by a constant (up to eps = 1e-8), so multiplying both loss weights by c is
the same run as dividing ``weight_decay`` by c. The weights therefore matter in two ways only:
against the weight decay, and as the ratio of the two losses at the switch, which Adam's
second-moment estimate absorbs within about 1 / (1 - beta2) = 1,000 steps.

The first is measured here, on the students stored by ``accuracy.py`` and ``student_variants.py``
(``benchmarks/.runs/<dataset>/<run>/HetComp.pth``; not in git). Each checkpoint, saved at the
student's best epoch, keeps Adam's state: ``exp_avg_sq`` (v) is the running mean of the squared
gradient g = w dL/dtheta + lambda theta. Per embedding entry (row 0, RecBole's padding id, left
out), lambda |theta| / sqrt(v / (1 -
beta2^step)) is the weight decay's share of the gradient's RMS; the table gives its median and
90th percentile over the entries of the user and of the item embeddings, the share of entries
where the decay is the larger part, and the smallest sqrt(v) in units of eps (far above 1: eps
plays no part, so the invariance above holds). Writes ``benchmarks/results/loss_weights.{json,md}``.
"""

import argparse
import json
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recbole_hetcomp.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.store import library_versions  # noqa: E402
from recbole_hetcomp.trainer.base import load_checkpoint  # noqa: E402

RUNS = ROOT / "benchmarks" / ".runs"
RESULTS = ROOT / "benchmarks" / "results"
PARAMETERS = {"user_embedding.weight": "users", "item_embedding.weight": "items"}


def decay_shares(checkpoint):
    """{'users'|'items': statistics of lambda |theta| / RMS(g)} from a HetComp checkpoint's Adam state."""
    group = checkpoint["optimizer"]["param_groups"][0]
    beta2, eps, decay = group["betas"][1], group["eps"], group["weight_decay"]
    names = list(checkpoint["state_dict"])
    out = {}
    for name, index in zip(names, group["params"]):
        if name not in PARAMETERS:
            continue
        theta = checkpoint["state_dict"][name].double()[1:]  # row 0: RecBole's padding id, never in a batch
        state = checkpoint["optimizer"]["state"][index]
        rms = (state["exp_avg_sq"].double()[1:] / (1 - beta2 ** float(state["step"]))).sqrt()
        share = decay * theta.abs() / rms
        out[PARAMETERS[name]] = {
            "entries": theta.numel(), "median_abs_theta": theta.abs().quantile(0.5).item(),
            "median_rms_grad": rms.quantile(0.5).item(), "median_share": share.quantile(0.5).item(),
            "p90_share": share.quantile(0.9).item(), "decay_larger": (share > 1).double().mean().item(),
            "min_rms_over_eps": (rms.min() / eps).item()}
    return out


def student_row(path):
    ckpt = load_checkpoint(path, "cpu")
    config = ckpt["config"]
    group = ckpt["optimizer"]["param_groups"][0]
    row = {"run": f"{path.parent.parent.name}/{path.parent.name}", "seed": config["seed"],
           "embedding_size": config["embedding_size"], "best_epoch": ckpt["epoch"],
           "steps": int(next(iter(ckpt["optimizer"]["state"].values()))["step"]),
           "learning_rate": group["lr"], "weight_decay": group["weight_decay"],
           "overall_loss_weight": config["overall_loss_weight"], "rank_loss_weight": config["rank_loss_weight"],
           "loss_at_best_epoch": None, **decay_shares(ckpt)}
    results = path.parent / "results.json"
    if results.exists():
        for r in json.loads(results.read_text())["rows"]:
            if r["name"] == "HetComp" and isinstance(r.get("curriculum"), dict):
                switch = r["curriculum"].get("loss_switch_epoch")
                row["loss_at_best_epoch"] = "rank" if switch is not None and ckpt["epoch"] >= switch else "overall"
    return row


def markdown(rows):
    out = ["| run | d | best epoch (Adam steps) | loss then | weights (set, list) | weight_decay | entries | "
           "median abs(theta) | median RMS(g) | decay / RMS(g): median | 90th pct | entries where decay > rest | "
           "min RMS(g) / eps |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for part in PARAMETERS.values():
            s = r[part]
            out.append(f"| {r['run']} | {r['embedding_size']} | {r['best_epoch']} ({r['steps']:,}) | "
                       f"{r['loss_at_best_epoch'] or '?'} | {r['overall_loss_weight']}, {r['rank_loss_weight']} | "
                       f"{r['weight_decay']} | {part} | {s['median_abs_theta']:.3f} | {s['median_rms_grad']:.2e} | "
                       f"{s['median_share']:.3f} | {s['p90_share']:.3f} | {s['decay_larger']:.1%} | "
                       f"{s['min_rms_over_eps']:,.0f} |")
    return "\n".join(out)


def main():
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    paths = sorted(RUNS.glob("*/*/HetComp.pth"))
    if not paths:
        raise SystemExit(f"no stored student under {RUNS}/<dataset>/<run>/HetComp.pth: run benchmarks/accuracy.py "
                         "or benchmarks/student_variants.py first")
    rows = [{"dataset": p.parent.parent.name, **student_row(p)} for p in paths]
    atomic_write_text(RESULTS / "loss_weights.json", json.dumps(
        {"benchmark": "loss_weights", "date": date.today().isoformat(), "versions": library_versions(),
         "rows": rows}, indent=1) + "\n")
    text = ["# Loss weights under Adam: the weight decay's share of the student's gradient", "",
            f"{date.today().isoformat()}: every stored student (`benchmarks/.runs`), at its best epoch, from its "
            "checkpoint's Adam state. See benchmarks/README.md.", "", markdown(rows), ""]
    atomic_write_text(RESULTS / "loss_weights.md", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
