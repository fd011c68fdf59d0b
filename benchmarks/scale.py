"""The student side at ml-20m's shape on one machine: store, curriculum, ensemble fit and HetComp's epoch.

    python benchmarks/scale.py [--fractions 0.1,0.3,1.0] [--steps 20] [--workdir DIR]

Synthetic trajectories at ml-20m's shape (138,493 users, 26,744 items, 20,000,263 ratings; 6 teachers x 4 points
x N = 100 items per user) go through the real store (:class:`~recbole_hetcomp.trajectories.store.TrajectoryStore`).
Items are drawn with a popularity skew like MovieLens' (probability proportional to (rank + 10) ** -1.1, Gumbel
top-N per list), a user's training items number like ml-20m's (log-normal around its 115 a user after the 80 %
split). Each fraction of the users runs in a child process of its own, so its peak RSS is its own. At each size:

- the store's size on disk and its load time (every teacher, checksums verified);
- the peak RSS of the process once the curriculum state is built (:class:`~recbole_hetcomp.distill.curriculum.Curriculum`);
- one DKC step (a non-first one: the second of two) and one target rebuild (T(u) of every user);
- the ensemble fit as a run makes it (greedy, the default grid, on at most ``ensemble_fit_users`` = 20,000 users
  with ~14 validation items each, then on each half of those for the held-out gain), from the final points;
- one HetComp epoch at the released batching (1,024 interactions a step, the step's unique users) and with
  ``hetcomp_batch: users`` (the default ``hetcomp_batch_size`` users a step): ``--steps`` steps of the real loss
  (forward and backward, the [B, I] training mask built as the model builds it) timed and extrapolated to the
  epoch's steps, which the table says.

Then, in a process of its own, RecBole builds the dataset and split of a synthetic atomic file of ml-20m's size
(20,000,263 rows), once, as a run does: its time and peak RSS (``--no-dataset`` skips it).

Goals on a 2-core, 24 GB machine: peak RSS under 16 GB at full size, a DKC step and a target rebuild at most
10 s each. Results: ``results/scale.{json,md}``. Nothing else should run meanwhile (the figures are times).
"""

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from timing import machine  # noqa: E402

from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.settings import properties_dir  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402

USERS, ITEMS, RATINGS = 138_493, 26_744, 20_000_263
TEACHERS, POINTS, N, K, P, DKC_K, D = 6, 4, 100, 100, 10, 50, 6
TRAIN_PER_USER = 0.8 * RATINGS / USERS
VALID_PER_USER = 0.1 * RATINGS / USERS
FIT_USERS = 20_000  # properties/overall.yaml's ensemble_fit_users
# hetcomp_batch_size, the users a step of ``hetcomp_batch: users``: the student's default (properties/model/HetComp.yaml)
USERS_PER_STEP = yaml.safe_load((properties_dir() / "model" / "HetComp.yaml").read_text())["hetcomp_batch_size"]
GOALS = {"peak_rss_gib": 16.0, "dkc_step_s": 10.0, "target_rebuild_s": 10.0}
RESULTS = ROOT / "benchmarks" / "results"


def popularity_logits(n_items):
    ranks = torch.arange(n_items, dtype=torch.float32)
    return -1.1 * torch.log(ranks + 10.0)


def skewed_lists(rows, n, logits, gen, chunk=8192):
    """int32 [rows, n]: distinct items per row, popularity-skewed, ranked by Gumbel-perturbed popularity (item 0 is
    RecBole's padding item: never drawn). Each row draws 3n items with replacement from the popularity
    distribution and keeps its n best distinct ones by logit + Gumbel noise: the Gumbel top-n of the whole
    catalogue would cost rows x items random numbers (an hour at ml-20m's shape). A row with fewer than n distinct
    draws (rare) takes the Gumbel top-n of the whole catalogue."""
    probs = torch.softmax(logits, 0)
    probs[0] = 0
    out = torch.empty(rows, n, dtype=torch.int32)
    for a in range(0, rows, chunk):
        b = min(rows, a + chunk)
        draws = torch.multinomial(probs, (b - a) * 3 * n, replacement=True, generator=gen).view(b - a, 3 * n)
        draws = draws.sort(1).values
        repeat = torch.zeros_like(draws, dtype=torch.bool)
        repeat[:, 1:] = draws[:, 1:] == draws[:, :-1]
        g = -torch.log(-torch.log(torch.rand(draws.shape, generator=gen).clamp_min(1e-12)))
        key = torch.where(repeat, torch.tensor(float("-inf")), logits[draws] + g)
        out[a:b] = draws.gather(1, key.topk(n, dim=1).indices).to(torch.int32)
        short = torch.nonzero((~repeat).sum(1) < n).view(-1)
        for r in short.tolist():
            full = logits - torch.log(-torch.log(torch.rand(logits.numel(), generator=gen).clamp_min(1e-12)))
            full[0] = float("-inf")
            out[a + r] = full.topk(n).indices.to(torch.int32)
    return out


def counts(users, mean, gen, sigma=1.0):
    """int64 [users]: log-normal counts with the given mean, at least 1."""
    mu = math.log(mean) - sigma ** 2 / 2
    return torch.exp(mu + sigma * torch.randn(users, generator=gen)).round().clamp_min(1).long()


def csr(count, logits, gen):
    """(indptr int64 [U + 1], items int32 [nnz]): each user's items, distinct within a user up to collisions."""
    indptr = torch.zeros(count.numel() + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(count, 0)
    probs = torch.softmax(logits, 0)
    probs[0] = 0
    items = torch.multinomial(probs, int(indptr[-1]), replacement=True, generator=gen).to(torch.int32)
    return indptr, items


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def build_store(root, users, gen):
    """Write six synthetic teachers into a store under ``root``; returns (store, keys, train CSR, valid CSR)."""
    from recbole_hetcomp.trajectories.store import Trajectory, TrajectoryStore

    logits = popularity_logits(ITEMS)
    store = TrajectoryStore(root)
    train = csr(counts(users, TRAIN_PER_USER, gen), logits, gen)
    valid = csr(counts(users, VALID_PER_USER, gen), logits, gen)
    keys = []
    for t in range(TEACHERS):
        top = skewed_lists(POINTS * users, N, logits, gen).view(POINTS, users, N)
        traj = Trajectory(f"T{t}", top, train[1], train[0],
                          meta={"milestones": [0.25, 0.5, 0.75, 1.0], "milestone_epochs": [1, 2, 3, 4]})
        key = f"{t:016x}"
        store.save("scale", key, traj)
        keys.append(key)
    return store, keys, train, valid


def epoch_cost(users, train, steps, gen):
    """Seconds of one HetComp epoch at both batchings, from ``steps`` timed steps each (extrapolated)."""
    from recbole_hetcomp.distill.ensemble import csr_row_mask
    from recbole_hetcomp.distill.losses import factorised_loss

    indptr, items = train[0], train[1].long()
    user_e = torch.nn.Parameter(torch.randn(users, D, generator=gen) * 0.01)
    item_e = torch.nn.Parameter(torch.randn(ITEMS, D, generator=gen) * 0.01)
    opt = torch.optim.Adam([user_e, item_e], lr=1e-3)
    target = torch.randint(1, ITEMS, (users, K), generator=gen)
    observed = torch.randint(1, ITEMS, (users, P), generator=gen)
    nnz = int(indptr[-1])
    owner = torch.repeat_interleave(torch.arange(users), indptr[1:] - indptr[:-1])
    workspace = torch.empty(0)

    def step(batch):
        nonlocal workspace
        if workspace.numel() < 2 * batch.numel() * ITEMS:
            workspace = torch.empty(2 * batch.numel() * ITEMS)
        opt.zero_grad()
        loss = factorised_loss("overall", user_e[batch], item_e, observed[batch], target[batch],
                               csr_row_mask(indptr, items, batch, ITEMS),
                               clamp=40.0, workspace=workspace)
        loss.backward()
        opt.step()

    out = {}
    for name, draw, n_steps in (
            ("interactions", lambda: torch.unique(owner[torch.randint(0, nnz, (1024,), generator=gen)]),
             math.ceil(nnz / 1024)),
            ("users", lambda: torch.randperm(users, generator=gen)[:USERS_PER_STEP], math.ceil(users / USERS_PER_STEP))):
        step(draw())  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            step(draw())
        per_step = (time.perf_counter() - start) / steps
        out[name] = {"steps_per_epoch": n_steps, "timed_steps": steps, "s_per_step": round(per_step, 4),
                     "epoch_s_extrapolated": round(per_step * n_steps, 1)}
    return out


def child(fraction, steps, workdir):
    from recbole_hetcomp.distill.curriculum import Curriculum
    from recbole_hetcomp.distill.fit import fit_fusion, halves, prepare_sample

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    users = round(USERS * fraction)
    out = {"fraction": fraction, "users": users, "items": ITEMS}
    root = Path(workdir) / f"store-{fraction}"
    (store, keys, train, valid), out["write_s"] = timed(lambda: build_store(root, users, gen))
    out["store_bytes"] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    out["generated_rss_gib"] = round(peak_rss_gib(), 2)
    del store
    from recbole_hetcomp.trajectories.store import TrajectoryStore

    store = TrajectoryStore(root)
    trajs, out["load_s"] = timed(lambda: [store.load("scale", f"T{t}", keys[t]) for t in range(TEACHERS)])
    curriculum, out["curriculum_build_s"] = timed(lambda: Curriculum(trajs, ITEMS, k_target=K, p_obs=P, k=DKC_K))
    out["peak_rss_curriculum_gib"] = round(peak_rss_gib(), 2)
    student = torch.randint(1, ITEMS, (users, DKC_K), generator=gen)
    curriculum.step(student, 10)
    _, out["dkc_step_s"] = timed(lambda: curriculum.step(torch.randint(1, ITEMS, (users, DKC_K), generator=gen), 20))
    _, out["target_rebuild_s"] = timed(curriculum.targets)
    final = torch.stack([t.top[-1] for t in trajs])  # int32, as run/fusion.py passes them
    # as the run fits (run/fusion.py): on at most ensemble_fit_users of them (only those prepared), then on each half
    (problem, _), out["fit_prepare_s"] = timed(lambda: prepare_sample(final, valid[0], valid[1].long(), FIT_USERS, 0))
    out["fit_users"] = problem.n_users
    names = [t.teacher for t in trajs]
    fusion, out["fit_search_s"] = timed(lambda: fit_fusion(problem, names))
    _, out["fit_held_out_s"] = timed(lambda: [fit_fusion(problem.subset(h), names) for h in halves(problem.n_users)])
    out["fit_s"] = round(out["fit_prepare_s"] + out["fit_search_s"] + out["fit_held_out_s"], 1)
    out["epoch"] = epoch_cost(users, train, steps, gen)
    out["peak_rss_gib"] = round(peak_rss_gib(), 2)
    for key in ("write_s", "load_s", "curriculum_build_s", "dkc_step_s", "target_rebuild_s", "fit_prepare_s",
                "fit_search_s", "fit_held_out_s"):
        out[key] = round(out[key], 2)
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out), flush=True)


def data_child(workdir, fraction=1.0):
    """RecBole's dataset build and split (once, as a run makes it: ``load_data`` of the first model) of a synthetic
    ml-20m-sized atomic file: users with log-normal activity (at least 5 ratings each), popularity-skewed items
    (a user may repeat an item, as a log can)."""
    import numpy as np

    from recbole_hetcomp.config import make_config
    from recbole_hetcomp.run.training import load_data

    gen = torch.Generator().manual_seed(0)
    root = Path(workdir) / "data"
    inter = root / "ml-20m" / "ml-20m.inter"
    inter.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    n_users, n_ratings = round(USERS * fraction), round(RATINGS * fraction)
    count = counts(n_users, n_ratings / n_users, gen).clamp_max(ITEMS // 2)
    count = (count.double() * n_ratings / count.sum()).round().long().clamp(5, ITEMS // 2)
    indptr, items = csr(count, popularity_logits(ITEMS), gen)
    users = torch.repeat_interleave(torch.arange(1, n_users + 1), count).numpy()
    stamps = np.random.default_rng(0).integers(789_652_009, 1_427_784_002, users.size)
    with open(inter, "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for a in range(0, users.size, 1 << 20):
            b = min(users.size, a + (1 << 20))
            rows = np.column_stack([users[a:b], items[a:b].numpy(), np.full(b - a, 4), stamps[a:b]])
            f.write("".join(f"{u}\t{i}\t{r}.0\t{t}.0\n" for u, i, r, t in rows.tolist()))
    out = {"rows": int(users.size), "users": n_users, "write_s": round(time.perf_counter() - start, 1),
           "file_bytes": inter.stat().st_size, "rss_before_gib": round(peak_rss_gib(), 2)}
    config = make_config("BPR", "ml-20m", config_dict={"data_path": str(root), "state": "ERROR", "epochs": 1})
    data, build_s = timed(lambda: load_data(config))
    out.update(build_s=round(build_s, 1), peak_rss_gib=round(peak_rss_gib(), 2),
               interactions_after_filtering=int(data.train_dataset.inter_num + data.valid._dataset.inter_num
                                                + data.test._dataset.inter_num),
               items=int(data.train_dataset.item_num - 1))
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out), flush=True)


def verdict(value, goal):
    return f"{value} ({'met' if value <= goal else 'NOT met'}, goal <= {goal})"


def markdown(out):
    lines = [f"# The student side at ml-20m's shape ({out['date']}, {out['machine']})", "",
             "Regenerate: `python benchmarks/scale.py`. Synthetic trajectories through the real store: "
             f"{TEACHERS} teachers x {POINTS} points x N = {N} per user, {ITEMS:,} items, popularity-skewed; each "
             "size in its own process. The epoch is timed on a few steps and extrapolated (columns say how many).",
             "", f"Versions: {out['versions']}", "",
             "| users | store on disk | load | peak RSS with the curriculum | DKC step | target rebuild | ensemble fit "
             f"| epoch, 1,024 interactions a step | epoch, {out['users_per_step']:,} users a step | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["sizes"]:
        e = r["epoch"]
        lines.append(
            f"| {r['users']:,} ({r['fraction']:.0%}) | {r['store_bytes'] / 2 ** 30:.2f} GiB | {r['load_s']} s | "
            f"{r['peak_rss_curriculum_gib']} GiB | {r['dkc_step_s']} s | {r['target_rebuild_s']} s | "
            f"{r['fit_s']} s ({r['fit_users']:,} users) | "
            f"{e['interactions']['epoch_s_extrapolated']} s ({e['interactions']['steps_per_epoch']:,} steps, "
            f"{e['interactions']['timed_steps']} timed) | {e['users']['epoch_s_extrapolated']} s "
            f"({e['users']['steps_per_epoch']:,} steps, {e['users']['timed_steps']} timed) | {r['peak_rss_gib']} GiB |")
    full = max(out["sizes"], key=lambda r: r["users"])
    lines += ["", f"At {full['users']:,} users: peak RSS {verdict(full['peak_rss_gib'], GOALS['peak_rss_gib'])} GiB; "
              f"DKC step {verdict(full['dkc_step_s'], GOALS['dkc_step_s'])} s; target rebuild "
              f"{verdict(full['target_rebuild_s'], GOALS['target_rebuild_s'])} s."]
    d = out.get("dataset_build")
    if d:
        lines += ["", "RecBole's dataset build and 80/10/10 split of a synthetic ml-20m-sized atomic file "
                  f"({d['rows']:,} rows, {d['users']:,} users, {d['file_bytes'] / 2 ** 30:.2f} GiB; built once per run "
                  f"as the pipeline does): {d['build_s']} s, peak RSS {d['peak_rss_gib']} GiB "
                  f"({d['interactions_after_filtering']:,} interactions and {d['items']:,} items after RecBole's filters)."]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fractions", default="0.1,0.3,1.0")
    p.add_argument("--steps", type=int, default=20, help="timed loss steps per batching (then extrapolated)")
    p.add_argument("--workdir", default=None, help="where the stores are written (default: a temporary folder)")
    p.add_argument("--no-dataset", action="store_true", help="skip the synthetic 20M-row RecBole dataset build")
    p.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-fraction", type=float, default=1.0, help="size of the synthetic dataset against ml-20m's "
                   "(below 1 for a smoke test only)")
    p.add_argument("--data-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        return child(args.child, args.steps, args.workdir)
    if args.data_child:
        return data_child(args.workdir, args.data_fraction)
    sizes, dataset = [], None

    def run_child(*extra):
        proc = subprocess.run([sys.executable, __file__, *extra, "--steps", str(args.steps), "--workdir", work],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{' '.join(extra)} failed (exit {proc.returncode})")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for fraction in [float(f) for f in args.fractions.split(",") if f]:
            sizes.append(run_child("--child", str(fraction)))
            print(f"{fraction}: {sizes[-1]}", flush=True)
        if not args.no_dataset:
            dataset = run_child("--data-child", "--data-fraction", str(args.data_fraction))
            print(f"dataset: {dataset}", flush=True)
    out = {"benchmark": "scale", "date": date.today().isoformat(), "machine": machine(),
           "versions": library_versions(), "goals": GOALS, "users_per_step": USERS_PER_STEP, "sizes": sizes,
           "dataset_build": dataset}
    atomic_write_text(RESULTS / "scale.json", json.dumps(out, indent=1) + "\n")
    atomic_write_text(RESULTS / "scale.md", markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
