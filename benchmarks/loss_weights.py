"""Loss weights under Adam: how hard does the weight decay pull on the trained student?

    python benchmarks/loss_weights.py

HetComp multiplies its set-level loss by ``overall_loss_weight`` (0.01) and its list-level loss
by ``rank_loss_weight`` (0.005), and RecBole trains it with Adam, whose ``weight_decay`` (1e-5)
adds lambda * theta to the gradient (no gradient clipping by default). Adam's step
lr * m / (sqrt(v) + eps) does not change when the gradient is multiplied by a constant (up to eps =
1e-8), so multiplying both loss weights by c is the same run as dividing ``weight_decay`` by c. The
weights therefore matter in two ways only: against the weight decay, and through their ratio at
the switch from one loss to the other, which Adam's second-moment estimate (time constant
1 / (1 - beta2) = 1,000 steps) takes a few thousand steps to absorb.

The first is measured here, on the students stored by ``accuracy.py`` and ``student_variants.py``
(``benchmarks/.runs/<dataset>/<run>/HetComp.pth``; not in git). Each checkpoint, saved at the
student's best epoch, keeps Adam's state: ``exp_avg_sq`` (v) is the running mean of the squared
gradient g = w dL/dtheta + lambda theta. Since m averages g, the decay's part of each step is
lr * lambda theta / sqrt(v-hat) (v-hat = v / (1 - beta2^step), bias-corrected): per embedding entry
(row 0, RecBole's padding id, left out), lambda |theta| / sqrt(v-hat) is the decay's pull per step
in units of lr. Above 1, the decay term is larger than the RMS of the whole gradient, which the
loss then holds against it. The table gives its median and 90th percentile over the entries of
the user and of the item embeddings, the fraction of entries above 1, and the smallest sqrt(v-hat)
in units of eps (at the best epoch: eps is at most that fraction of Adam's denominator, so the
invariance above holds to it). Writes ``benchmarks/results/loss_weights.{json,md}``.
"""

import argparse
import json
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.trainer.base import load_checkpoint  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402

RUNS = ROOT / "benchmarks" / ".runs"
RESULTS = ROOT / "benchmarks" / "results"
PARAMETERS = {"user_embedding.weight": "users", "item_embedding.weight": "items"}


def decay_pull(checkpoint):
    """{'users'|'items': statistics of lambda |theta| / sqrt(v-hat)} from a HetComp checkpoint's Adam state."""
    group = checkpoint["optimizer"]["param_groups"][0]
    beta2, eps, decay = group["betas"][1], group["eps"], group["weight_decay"]
    names = list(checkpoint["state_dict"])  # the model's parameters, in the optimizer's order
    out = {}
    for name, index in zip(names, group["params"]):
        if name not in PARAMETERS:
            continue
        state = checkpoint["optimizer"]["state"][index]
        if "exp_avg_sq" not in state:
            raise SystemExit(f"{name}: no Adam state in the checkpoint (learner is not adam?); this reads Adam's only")
        if state["exp_avg_sq"].shape != checkpoint["state_dict"][name].shape:
            raise SystemExit(f"{name}: the optimizer's state has shape {tuple(state['exp_avg_sq'].shape)}, not the "
                             "parameter's: the checkpoint's parameters are not in the optimizer's order")
        theta = checkpoint["state_dict"][name].double()[1:]  # row 0: RecBole's padding id, never in a batch
        rms = (state["exp_avg_sq"].double()[1:] / (1 - beta2 ** float(state["step"]))).sqrt()
        pull = decay * theta.abs() / rms
        out[PARAMETERS[name]] = {
            "entries": theta.numel(), "median_abs_theta": theta.abs().quantile(0.5).item(),
            "median_rms_grad": rms.quantile(0.5).item(), "median_pull": pull.quantile(0.5).item(),
            "p90_pull": pull.quantile(0.9).item(), "pull_above_1": (pull > 1).double().mean().item(),
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
           "loss_at_best_epoch": None, **decay_pull(ckpt)}
    results = path.parent / "results.json"
    if results.exists():
        for r in json.loads(results.read_text())["rows"]:
            if r["name"] == "HetComp" and isinstance(r.get("curriculum"), dict):
                switch = r["curriculum"].get("loss_switch_epoch")
                row["loss_at_best_epoch"] = "rank" if switch is not None and ckpt["epoch"] >= switch else "overall"
    return row


def markdown(rows):
    out = ["| run | d | best epoch (Adam steps) | loss then | weights (set, list) | weight_decay | entries | "
           "median abs(theta) | median RMS(g) | decay pull per step / lr: median | 90th pct | entries above 1 | "
           "min RMS(g) / eps |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for part in PARAMETERS.values():
            s = r[part]
            out.append(f"| {r['run']} | {r['embedding_size']} | {r['best_epoch']} ({r['steps']:,}) | "
                       f"{r['loss_at_best_epoch'] or '?'} | {r['overall_loss_weight']}, {r['rank_loss_weight']} | "
                       f"{r['weight_decay']} | {part} | {s['median_abs_theta']:.3f} | {s['median_rms_grad']:.2e} | "
                       f"{s['median_pull']:.3f} | {s['p90_pull']:.3f} | {s['pull_above_1']:.1%} | "
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
    text = ["# Loss weights under Adam: the weight decay's pull on the student, per step, in units of lr", "",
            f"{date.today().isoformat()}: every stored student (`benchmarks/.runs`), at its best epoch, from its "
            "checkpoint's Adam state. See benchmarks/README.md.", "", markdown(rows), ""]
    atomic_write_text(RESULTS / "loss_weights.md", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
