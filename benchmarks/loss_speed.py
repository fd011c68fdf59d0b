"""Loss speed: one student batch's loss forward + backward, the two ways the library offers.

    python benchmarks/loss_speed.py [--repeats 9] [--seed 0]

For each size (ml-100k: B = 600 users per batch, I = 1,682; CiteULike-t: B = 750, I = 22,383;
d = 6, P = 10, K = 100) and two score regimes (inside [-40, 40], as early in training, and with
about 2% of the scores beyond it, as late in a CiteULike-t run), it times, side by side in one
process:

* scores path: ``scores = U @ V.T``, ``torch.clamp`` when a score is outside the bounds, then
  :func:`recbole_hetcomp.distill.losses.overall_loss` / :func:`~recbole_hetcomp.distill.losses.rank_loss`
  (the spec's functions; how the student trained until 2026-11-25);
* factorised path: :func:`recbole_hetcomp.distill.losses.factorised_loss` with a reused workspace and the
  training items as a [B, I] mask;
* entries path: the same with the training items as
  :class:`~recbole_hetcomp.distill.losses.TrainEntries` (how the student trains now: the tail is zeroed
  at the entries, not masked over [B, I]).

All give the same loss (checked) and gradients for U and V (checked to 1e-4 relative; the two factorised
paths bit for bit). The
figure is the median of ``--repeats`` timed forward+backward calls after two warm-ups.
Writes benchmarks/results/loss_speed.{json,md}.
"""

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from timing import machine, median_seconds  # noqa: E402  (benchmarks/timing.py)

from recbole_hetcomp.distill.losses import TrainEntries, factorised_loss, overall_loss, rank_loss  # noqa: E402
from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402

SIZES = {"ml-100k": (600, 1682), "citeulike-t": (750, 22383)}
D, P, K, CLAMP = 6, 10, 100, 40.0
# Embedding scale per regime: 0.1 keeps every score near 0; 2.6 puts about 2% beyond +-40 (d = 6).
REGIMES = {"inside the clamp": 0.1, "about 2% clamped": 2.6}
SPEC = {"overall": overall_loss, "rank": rank_loss}


def case(b, n_items, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    users = (torch.randn(b, D, generator=gen) * scale).requires_grad_(True)
    table = (torch.randn(n_items, D, generator=gen) * scale).requires_grad_(True)
    train = torch.rand(b, n_items, generator=gen) < 0.005
    observed = torch.randint(1, n_items, (b, P), generator=gen)
    top = torch.randint(1, n_items, (b, K), generator=gen)
    return users, table, observed, top, train


def scores_path(mode, users, table, observed, top, train):
    scores = users @ table.t()
    low, high = torch.aminmax(scores.detach())
    if low < -CLAMP or high > CLAMP:
        scores = scores.clamp(-CLAMP, CLAMP)
    return SPEC[mode](scores, observed, top, train)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = []
    for dataset, (b, n_items) in SIZES.items():
        for regime, scale in REGIMES.items():
            users, table, observed, top, train = case(b, n_items, scale, args.seed)
            with torch.no_grad():
                clamped_share = ((users @ table.t()).abs() > CLAMP).float().mean().item()
            workspace = torch.empty(2 * b * n_items)
            column_0 = train.clone()
            column_0[:, 0] = True  # TrainEntries imply column 0, RecBole's padding item: the mask says so too
            train = column_0
            rows_, cols_ = train[:, 1:].nonzero(as_tuple=True)
            entries = TrainEntries(rows_, cols_ + 1, tuple(train.shape))
            for mode in ("overall", "rank"):
                def old():
                    return scores_path(mode, users, table, observed, top, train)

                def new(mask=train):
                    return factorised_loss(mode, users, table, observed, top, mask, clamp=CLAMP,
                                           workspace=workspace)

                def sparse():
                    return new(entries)

                want = old()  # each forward's backward before the next one reuses the workspace
                want_g = torch.autograd.grad(want, [users, table])
                got = new()
                got_g = torch.autograd.grad(got, [users, table])
                got_e = sparse()
                got_eg = torch.autograd.grad(got_e, [users, table])
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)
                for g, w in zip(got_g, want_g):
                    torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
                assert torch.equal(got_e, got) and all(torch.equal(e, g) for e, g in zip(got_eg, got_g))
                old_s = median_seconds(lambda: old().backward(), args.repeats, warmups=2)
                new_s = median_seconds(lambda: new().backward(), args.repeats, warmups=2)
                entries_s = median_seconds(lambda: sparse().backward(), args.repeats, warmups=2)
                rows.append({"dataset": dataset, "batch_users": b, "items": n_items, "regime": regime,
                             "clamped_share": round(clamped_share, 4), "loss": mode,
                             "scores_path_ms": round(1000 * old_s, 2), "factorised_ms": round(1000 * new_s, 2),
                             "ratio": round(old_s / new_s, 2), "entries_ms": round(1000 * entries_s, 2),
                             "entries_ratio": round(new_s / entries_s, 2)})
                print(rows[-1], flush=True)

    today = date.today().isoformat()
    machine_line = machine()
    out = {"benchmark": "loss_speed", "date": today, "machine": machine_line, "versions": library_versions(),
           "seed": args.seed, "repeats": args.repeats, "d": D, "P": P, "K": K, "clamp": CLAMP, "rows": rows}
    res = ROOT / "benchmarks" / "results"
    atomic_write_text(res / "loss_speed.json", json.dumps(out, indent=1) + "\n")
    lines = [f"# Loss speed: one batch's loss forward + backward ({today}, {machine_line})", "",
             "| size | scores | loss | scores path ms | factorised ms | ratio | entries ms | factorised / entries |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']}: B={r['batch_users']}, I={r['items']:,} | {r['regime']} "
                     f"({r['clamped_share']:.1%}) | {r['loss']} | {r['scores_path_ms']} | {r['factorised_ms']} "
                     f"| {r['ratio']}x | {r['entries_ms']} | {r['entries_ratio']}x |")
    lines += ["",
              "- scores path: `U @ V.T`, `torch.clamp` if a score is outside [-40, 40], then the spec's "
              "`overall_loss` / `rank_loss` (the student's path until 2026-11-25).",
              "- factorised: `factorised_loss(mode, U, V, ..., clamp=40, workspace=...)` with a [B, I] training "
              "mask: scores, clamp, exp and mask in place in a reused [2, B, I] buffer.",
              "- entries: the same with the training items as `TrainEntries` (the student's path now): the tail "
              "zeroed at the entries instead of a `masked_fill_` over [B, I]; bit-identical values and gradients.",
              f"- ms: median of {args.repeats} forward+backward calls after two warm-ups, both paths in one "
              "process; values and gradients checked equal first.",
              f"- synthetic: d = {D}, P = {P}, K = {K}, 0.5% training items, seed {args.seed}; "
              f"torch {torch.__version__}."]
    atomic_write_text(res / "loss_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
