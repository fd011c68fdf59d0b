"""KD speed: one student step of HetComp's loss and of each ranking-KD baseline, and what an epoch costs.

    python benchmarks/kd_speed.py [--repeats 5] [--seed 0]

For ml-100k's and CiteULike-t's catalogues it times one step's loss forward + backward on an MF student
(d = 6, K = 100 target items a user, scores clamped to [-40, 40], 0.5% training items), side by side in one
process, at the two batchings the student offers:

* ``interactions`` (the released code's, the default): 1,024 interactions a step, i.e. about B = 600 distinct
  users on ml-100k and 750 on CiteULike-t, for ceil(training interactions / 1,024) steps an epoch;
* ``users`` (``hetcomp_batch: users``, 64 users a step, as properties/dataset/ml-1m.yaml sets): every user once
  an epoch.

The KD terms are :mod:`recbole_hetcomp.distill.kd`'s (RD at its defaults, RRD, DCD's two sides on 10 draws of
each kind from weights refreshed beforehand (the refresh, every 3 epochs, is not timed), CL-DRD on 30 candidates
at its first stage, and our earlier readings dcd_overview and cldrd_group); HetComp's is the student's own
factorised loss (overall mode). RD, RRD, both DCDs and CL-DRD also add a BPR term on the batch, not timed here (a
gather and a logsigmoid: small against the KD term). An epoch's figure is the step's
median times the steps of an epoch, said so in the table. Writes benchmarks/results/kd_speed.{json,md}.
"""

import argparse
import json
import math
import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from timing import machine, median_seconds  # noqa: E402

from recbole_hetcomp.distill import kd  # noqa: E402
from recbole_hetcomp.distill.losses import clamp_scores, factorised_loss  # noqa: E402
from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402

# (users, items, training interactions, distinct users in a batch of 1,024 interactions)
SIZES = {"ml-100k": (943, 1682, 80_000, 600), "citeulike-t": (5_219, 22_383, 78_958, 750)}  # docs/datasets.md
D, P, K, CLAMP, USER_BATCH = 6, 10, 100, 40.0, 64
METHODS = ("hetcomp", "rd", "rrd", "dcd", "cldrd", "dcd_overview", "cldrd_group")


def step_fn(method, b, n_items, seed):
    gen = torch.Generator().manual_seed(seed)
    users = (torch.randn(b, D, generator=gen) * 0.5).requires_grad_(True)
    table = (torch.randn(n_items, D, generator=gen) * 0.5).requires_grad_(True)
    train = torch.rand(b, n_items, generator=gen) < 0.005
    top = torch.stack([torch.randperm(n_items - 1, generator=gen)[:K] + 1 for _ in range(b)])
    observed = torch.randint(1, n_items, (b, P), generator=gen)
    workspace = torch.empty(2 * b * n_items)
    # DCD: the batch's positive items (one observed item of each user), each with K teacher users among the batch's
    # users, and weights as a refresh would leave them
    positives = torch.unique(observed[:, 0])
    item_users = torch.stack([torch.randperm(b, generator=gen)[:min(K, b)] for _ in range(positives.numel())])
    with torch.no_grad():
        user_w = kd.dcd_discrepancies(torch.randn(b, K, generator=gen), torch.ones(b, K, dtype=torch.bool), 0.1)
        item_w = kd.dcd_discrepancies(torch.randn(item_users.shape, generator=gen),
                                      torch.ones(item_users.shape, dtype=torch.bool), 0.1)

    def step():
        users.grad = table.grad = None
        if method == "hetcomp":
            loss = factorised_loss("overall", users, table, observed, top, train, clamp=CLAMP, workspace=workspace)
        else:
            scores = clamp_scores(users @ table.t(), CLAMP)  # the student's clamp of its [B, I] scores
            if method == "rd":
                loss = kd.rd_loss(scores, top, train)
            elif method == "rrd":
                loss = kd.rrd_loss(scores, top, train)
            elif method == "dcd":
                loss = kd.dcd_correction(scores.gather(1, top), kd.dcd_sample(user_w[0], 10),
                                         kd.dcd_sample(user_w[1], 10))
                pairs = (users[item_users] * table[positives].unsqueeze(1)).sum(-1).clamp(-CLAMP, CLAMP)
                loss = loss + kd.dcd_correction(pairs, kd.dcd_sample(item_w[0], 10), kd.dcd_sample(item_w[1], 10))
            elif method == "cldrd":
                cand = top[:, :30]
                loss = kd.cldrd_loss(scores.gather(1, cand), kd.cldrd_labels(0, 30), torch.ones_like(cand).bool())
            elif method == "dcd_overview":
                loss = kd.rrd_loss(scores, top, train) + kd.dcd_overview_loss(scores, top, train)
            else:
                loss = kd.cldrd_group_loss(scores, top, train, kd.cldrd_group_ends(0, K))
        loss.backward()

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = []
    for dataset, (n_users, n_items, nnz, b_interactions) in SIZES.items():
        for batching, b, steps in (("interactions", b_interactions, math.ceil(nnz / 1024)),
                                   ("users", USER_BATCH, math.ceil(n_users / USER_BATCH))):
            for method in METHODS:
                s = median_seconds(step_fn(method, b, n_items, args.seed), args.repeats, warmups=1)
                rows.append({"dataset": dataset, "batching": batching, "users_a_step": b, "items": n_items,
                             "method": method, "step_s": round(s, 4), "steps_per_epoch": steps,
                             "epoch_s_extrapolated": round(s * steps, 1)})
                print(rows[-1], flush=True)
    out = {"benchmark": "kd_speed", "date": date.today().isoformat(), "machine": machine(),
           "versions": library_versions(), "rows": rows}
    atomic_write_text(ROOT / "benchmarks" / "results" / "kd_speed.json", json.dumps(out, indent=1) + "\n")
    base = {(r["dataset"], r["batching"]): r["step_s"] for r in rows if r["method"] == "hetcomp"}
    lines = [f"# KD speed: one student step of each method ({out['date']}, {out['machine']})", "",
             "Regenerate: `python benchmarks/kd_speed.py`. MF student, d = 6, K = 100, one step's loss forward + "
             "backward (median of the repeats, one process); the epoch is the step times the epoch's steps "
             "(extrapolated). The BPR term of RD, RRD, both DCDs and CL-DRD is left out; DCD's refresh of its weights, every "
             "3 epochs, is not timed.", "",
             "| dataset | batching | users a step | method | ms a step | / HetComp | epoch (extrapolated) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["step_s"] / base[(r["dataset"], r["batching"])]
        lines.append(f"| {r['dataset']} ({r['items']:,} items) | {r['batching']} | {r['users_a_step']} | {r['method']} | "
                     f"{r['step_s'] * 1000:.1f} | {ratio:.1f}x | {r['epoch_s_extrapolated']} s "
                     f"({r['steps_per_epoch']} steps) |")
    atomic_write_text(ROOT / "benchmarks" / "results" / "kd_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
