"""LightGCN speed: RecBole's LightGCN against ours (recbole_hetcomp/model/lightgcn.py), side by side.

    python benchmarks/lightgcn_speed.py [--datasets ml-100k,citeulike-t,ml-1m] [--repeats 7]

Both are built on the same data, config and seed (so the same weights); the only difference is the product of
the propagation (RecBole: ``torch.sparse.mm`` on a COO matrix; ours: CSR, its transpose held once for the backward
pass). For each dataset it times, alternating the two models, the median of ``--repeats`` calls of:

* a teacher step: LightGCN's own BPR ``calculate_loss``, backward and an Adam step, on a batch of the dataset's
  LightGCN ``train_batch_size`` (properties/dataset/<name>.yaml), at the dataset's LightGCN settings;
* a student step: HetComp's LightGCN student at d = 6 on 16 users (``hetcomp_batch: users``,
  ``hetcomp_batch_size: 16``): the whole-graph propagation, the users' scores over the catalogue, HetComp's overall
  loss on them against a random target of 100 items, and backward;
* a full-sort evaluation: the propagation without gradient and the scores of 4,096 users (or all).

An epoch's figure is a step's median times the steps of an epoch (teacher: ceil(training interactions / batch);
student: ceil(users / 16)). It also checks that the two models' propagated embeddings agree (the largest absolute
difference), and trains each, as a teacher, for ``--train-epochs`` epochs with RecBole's ``Trainer`` (each on data
loaders of its own, built the same way, so both see the same batches and negatives) and one validation at the end:
the wall time of that training and whether the two validation results are equal.

CiteULike-t reads ``../shared/data/citeulike-t/users.dat``; ml-1m ``data/ml-1m.zip`` (``benchmarks/ml1m_data.py``);
a dataset whose file is missing is skipped, said so. Writes
benchmarks/results/lightgcn_speed.{json,md}.
"""

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from recbole.data.interaction import Interaction
from recbole.model.general_recommender.lightgcn import LightGCN as RecBoleLightGCN
from recbole.trainer import Trainer
from recbole.utils import init_seed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import accuracy  # noqa: E402
from timing import machine, median_seconds  # noqa: E402

from recbole_hetcomp.config import make_config  # noqa: E402
from recbole_hetcomp.distill.losses import clamp_scores, overall_loss  # noqa: E402
from recbole_hetcomp.model.lightgcn import LightGCN  # noqa: E402
from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.run.training import load_data, shared_split  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402

STUDENT_D, STUDENT_USERS, K, P, EVAL_USERS = 6, 16, 100, 10, 4096
CLASSES = (RecBoleLightGCN, LightGCN)  # RecBole's, ours: every comparison below is in this order


def available(dataset):
    """None, or why ``dataset`` cannot be measured here."""
    if dataset == "citeulike-t" and not accuracy.CITEULIKE.is_file():
        return f"{accuracy.CITEULIKE} is missing"
    if dataset == "ml-1m" and not (ROOT / "data" / "ml-1m.zip").is_file():
        return "data/ml-1m.zip is missing (python benchmarks/ml1m_data.py builds it)"
    return None


def build(dataset, **keys):
    """(config, data) of LightGCN on ``dataset`` at its settings there (our yaml's ``LightGCN.key`` lines)."""
    _, config, _ = accuracy.pipeline_settings(dataset, 2020, accuracy.CITEULIKE)
    config = {k: v for k, v in config.items() if k != "trajectory_store"}
    config = make_config("LightGCN", dataset, config_dict={**config, "device": "cpu", **keys})
    return config, load_data(config)


def models(config, data):
    """RecBole's LightGCN and ours, same seed: the same weights."""
    return [seeded(cls, config, data) for cls in CLASSES]


def seeded(cls, config, data):
    init_seed(config["seed"], True)
    return cls(config, data.train_dataset)


def teacher_step(model, batch):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    return step


def student_step(model, n_items):
    gen = torch.Generator().manual_seed(0)  # the same users and targets for both models
    users = torch.randperm(model.n_users - 1, generator=gen)[:STUDENT_USERS] + 1
    top = torch.stack([torch.randperm(n_items - 1, generator=gen)[:K] + 1 for _ in range(users.numel())])
    observed = torch.randint(1, n_items, (users.numel(), P), generator=gen)
    mask = torch.zeros(users.numel(), n_items, dtype=torch.bool).scatter_(1, observed, True)

    def step():
        model.zero_grad()
        user_e, item_e = model.forward()
        scores = clamp_scores(user_e[users] @ item_e.t(), 40.0)
        overall_loss(scores, observed, top, mask).backward()
    return step


def eval_step(model):
    users = torch.arange(1, min(model.n_users, EVAL_USERS + 1))

    def step():
        with torch.no_grad():
            user_e, item_e = model.forward()
            user_e[users] @ item_e.t()
    return step


def train_both(dataset, epochs):
    """[(RecBole's, ours)] of (seconds for ``epochs`` epochs and one validation, validation result)."""
    out = []
    for cls in CLASSES:
        config, data = build(dataset, epochs=epochs, eval_step=epochs, state="WARNING")
        trainer = Trainer(config, seeded(cls, config, data))
        start = time.perf_counter()
        _, valid = trainer.fit(data.train, data.valid, saved=False, verbose=False)
        out.append((time.perf_counter() - start, dict(valid)))
    return out


def measure(dataset, repeats, train_epochs=5):
    with shared_split():  # the dataset and split built once; each build() has data loaders of its own
        return _measure(dataset, repeats, train_epochs)


def _measure(dataset, repeats, train_epochs):
    config, data = build(dataset)
    theirs, ours = models(config, data)
    with torch.no_grad():
        agree = max((a - b).abs().max().item() for a, b in zip(theirs.forward(), ours.forward()))
    train = data.train_dataset
    n_inter, batch_size = len(train.inter_feat), config["train_batch_size"]
    gen = torch.Generator().manual_seed(0)
    picks = torch.randint(0, n_inter, (batch_size,), generator=gen)
    batch = Interaction({theirs.USER_ID: train.inter_feat[theirs.USER_ID][picks],
                         theirs.ITEM_ID: train.inter_feat[theirs.ITEM_ID][picks],
                         theirs.NEG_ITEM_ID: torch.randint(1, theirs.n_items, (batch_size,), generator=gen)})
    s_config, s_data = build(dataset, embedding_size=STUDENT_D)
    s_theirs, s_ours = models(s_config, s_data)
    steps = {"teacher": (teacher_step, (batch,), math.ceil(n_inter / batch_size)),
             "student": (student_step, (theirs.n_items,), math.ceil((theirs.n_users - 1) / STUDENT_USERS)),
             "eval": (eval_step, (), 1)}
    rows = []
    for what, (make, args, per_epoch) in steps.items():
        pair = (s_theirs, s_ours) if what == "student" else (theirs, ours)
        fns = [make(m, *args) for m in pair]
        for fn in fns:
            fn()  # warm-up
        times = [[], []]
        for _ in range(repeats):  # alternating, so that both see the same machine
            for i, fn in enumerate(fns):
                times[i].append(median_seconds(fn, 1, warmups=0))
        recbole_s, ours_s = (statistics.median(t) for t in times)
        rows.append({"dataset": dataset, "step": what, "per_epoch": per_epoch, "recbole_ms": recbole_s * 1e3,
                     "ours_ms": ours_s * 1e3, "speedup": recbole_s / ours_s,
                     "recbole_epoch_s": recbole_s * per_epoch, "ours_epoch_s": ours_s * per_epoch})
    (recbole_s, recbole_valid), (ours_s, ours_valid) = train_both(dataset, train_epochs)
    training = {"epochs": train_epochs, "recbole_s": recbole_s, "ours_s": ours_s, "speedup": recbole_s / ours_s,
                "valid_equal": recbole_valid == ours_valid, "recbole_valid": recbole_valid, "ours_valid": ours_valid}
    return {"dataset": dataset, "users": theirs.n_users - 1, "items": theirs.n_items - 1, "train_interactions": n_inter,
            "embedding_size": config["embedding_size"], "n_layers": config["n_layers"], "batch": batch_size,
            "max_abs_difference": agree, "rows": rows, "training": training}


DESCRIBE = {"teacher": "teacher step (BPR, dataset's LightGCN batch)", "student": "student step (d = 6, 16 users)",
            "eval": f"full-sort evaluation ({EVAL_USERS:,} users)"}


def markdown(out):
    lines = [f"# LightGCN speed: RecBole's product against ours ({out['date']}, {out['machine']})", "",
             "Regenerate: `python benchmarks/lightgcn_speed.py`. Both models built on the same data, config and seed; "
             "medians of alternating calls; an epoch is a step's median times the steps of an epoch (one for the "
             "evaluation). Versions: " + ", ".join(f"{k} {v}" for k, v in out["versions"].items()) + ".", ""]
    for skipped in out["skipped"]:
        lines.append(f"- skipped: {skipped}")
    for r in out["results"]:
        lines += ["", f"## {r['dataset']}", "",
                  f"{r['users']:,} users, {r['items']:,} items, {r['train_interactions']:,} training interactions; "
                  f"teacher d = {r['embedding_size']}, {r['n_layers']} layers, {r['batch']:,} interactions a batch. "
                  f"Largest difference between the two models' propagated embeddings: {r['max_abs_difference']:.1e}.",
                  "", "| step | steps an epoch | RecBole ms | ours ms | RecBole / ours | RecBole s an epoch | "
                  "ours s an epoch |", "|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {DESCRIBE[row['step']]} | {row['per_epoch']:,} | {row['recbole_ms']:.1f} | "
                         f"{row['ours_ms']:.1f} | {row['speedup']:.1f}x | {row['recbole_epoch_s']:.2f} | "
                         f"{row['ours_epoch_s']:.2f} |")
        t, metric = r["training"], r["training"]["recbole_valid"]
        epochs = f"{t['epochs']} epoch{'s' * (t['epochs'] != 1)}"
        lines += ["", f"Training as a teacher, {epochs} and one validation, RecBole's `Trainer`: RecBole's "
                      f"LightGCN {t['recbole_s']:.1f} s, ours {t['ours_s']:.1f} s ({t['speedup']:.1f}x); validation "
                      + ("equal, metric for metric" if t["valid_equal"] else
                         f"differs (RecBole's {t['recbole_valid']}, ours {t['ours_valid']})")
                      + f" ({', '.join(f'{k} {v}' for k, v in metric.items())})."]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="ml-100k,citeulike-t,ml-1m")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--train-epochs", type=int, default=5, help="epochs of the training check (default 5)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results, skipped = [], []
    with tempfile.TemporaryDirectory() as cwd:  # RecBole's ./log and ./saved go there, not into the repository
        os.chdir(cwd)
        for dataset in [d for d in args.datasets.split(",") if d]:
            why = available(dataset)
            if why:
                skipped.append(f"{dataset}: {why}")
                continue
            print(f"== {dataset}", flush=True)
            results.append(measure(dataset, args.repeats, args.train_epochs))
    out = {"benchmark": "lightgcn_speed", "date": date.today().isoformat(), "machine": machine(),
           "versions": library_versions(), "skipped": skipped, "results": results}
    atomic_write_text(ROOT / "benchmarks" / "results" / "lightgcn_speed.json", json.dumps(out, indent=1) + "\n")
    text = markdown(out)
    atomic_write_text(ROOT / "benchmarks" / "results" / "lightgcn_speed.md", text)
    print(text)


if __name__ == "__main__":
    main()
