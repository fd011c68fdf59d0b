"""The fitted ensemble against its best teacher and the equal-weight ensemble, and the two fit methods.

    python benchmarks/ensemble_fit.py [--datasets ml-100k,citeulike-t] [--seeds 2020,2021,2022]
                                      [--fits bagged|ceiling ...] [--citeulike PATH] [--threads N] [--only-aggregate]

On the accuracy runs' teachers (``benchmarks/accuracy.py``'s settings and store; teachers missing
from the store are trained first), for each dataset and seed:

- the best single teacher and the equal-weight ensemble (RecBole's evaluation);
- for each fit (``greedy``: selection with replacement from the best teacher, the default;
  ``coordinate``: coordinate ascent from equal weights; ``greedy, fit on recall@20``: the default search
  maximising ``ensemble_fit_metric=Recall@20``, the reported cut-off, instead of ``valid_metric``; ``bagged``:
  the greedy search on random halves of the users, weights averaged), a fresh
  fit on the validation split, timed (the fit alone, and with its two held-out half fits), its validation
  score, its held-out gain (fit on one half of the validation users, scored on the other, both ways round,
  in the fit's own metric) and the fitted ensemble's test metrics through RecBole's evaluator;
- the ``ceiling``: the default search maximising test Recall@20 on the test split itself (each teacher's list
  without the user's validation items, as the evaluator ranks for test). No run reads the test split and this
  is not a method: it says how much a fusion of these teachers' lists can gain on test at most (as far as that
  search finds, and in-sample), so a fit on validation that falls short of a target can be read against it.

Each (dataset, seed) is recorded in ``results/ensemble_fit/<dataset>-seed-<seed>.json`` and the
tables, with the issue's targets, aggregate every record into ``results/ensemble_fit.{json,md}``.
``--fits`` measures only the fits named; a seed already recorded keeps its other fits, provided its
teachers test exactly as the record's (else the script stops: fits of other teachers do not compare).
A fit measured on only some of a dataset's seeds is tabulated over those seeds, beside the default
fit on the same seeds.
The fit times are measured in the same process one after the other; run it on a quiet machine.
"""

import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from accuracy import RESULTS, pipeline_settings, seed_arguments, seeds_phrase  # noqa: E402
from timing import machine  # noqa: E402

from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402

RECORDS = RESULTS / "ensemble_fit"
# fit label -> config overrides (records keep them under "methods"; "greedy" is the run's default)
FITS = {"greedy": {}, "coordinate": {"ensemble_fit_method": "coordinate"},
        "greedy, fit on recall@20": {"ensemble_fit_metric": "Recall@20"}, "bagged": {"ensemble_fit_method": "bagged"}}
METRICS = ("recall@20", "ndcg@20")
# not a fit a run can make: the default search maximising test Recall@20 on the test split itself (:func:`ceiling`)
CEILING = "ceiling"
# every label --fits takes, in the order a full measurement runs them
ALL_FITS = (*FITS, CEILING)


def test_problem(data, trajectories):
    """The fit's problem on the test split, for the ceiling only: each teacher's final list without the user's
    validation items (the evaluator masks them when it ranks for test), order kept, against the test items."""
    from recbole_hetcomp.distill.fit import prepare
    from recbole_hetcomp.run.fusion import split_items

    lists = torch.stack([t.top[-1] for t in trajectories]).long()  # [M, U, N], -1 = padding
    n_users = lists.shape[1]
    v_indptr, v_items = split_items(data, "valid")
    width = int(max(int(lists.max()), int(v_items.max()) if v_items.numel() else 0)) + 1
    seen = torch.repeat_interleave(torch.arange(n_users), v_indptr[1:] - v_indptr[:-1]) * width + v_items
    keys = torch.arange(n_users).view(1, -1, 1) * width + lists
    lists = torch.where((lists >= 0) & torch.isin(keys, seen), torch.full_like(lists, -1), lists)
    lists = lists.gather(2, torch.argsort((lists < 0).to(torch.int8), dim=2, stable=True))  # padding last
    return prepare(lists.to(torch.int32), *split_items(data, "test"))


def ceiling(cfg, data, trajectories):
    """The default search (``cfg``'s settings) fitted on the test split: how far any fusion of these lists can go on
    test, an estimate from above of what a fit on validation can reach. No run reads the test split; this is not a
    method. Returns (fusion, seconds)."""
    from recbole_hetcomp.run.fusion import fit_settings, fit_with_settings, within_lists

    settings = within_lists(fit_settings(cfg), min(t.top[-1].shape[-1] for t in trajectories))  # as a run's fit
    start = time.perf_counter()
    fusion = fit_with_settings(test_problem(data, trajectories), [t.teacher for t in trajectories], settings)
    return fusion, time.perf_counter() - start


def measure(dataset, seed, citeulike, fits=ALL_FITS):
    from recbole.utils import init_logger

    from recbole_hetcomp.config import make_config
    from recbole_hetcomp.run.fusion import choose_fusion, config_fusion
    from recbole_hetcomp.run.pipeline import build_teachers, ensemble_row
    from recbole_hetcomp.run.training import load_data

    teachers, config, scoped = pipeline_settings(dataset, seed, citeulike)
    base = make_config("HetCompEnsemble", dataset, None, config, [])
    init_logger(base)
    teachers = list(teachers or base["teachers"])
    teacher_rows, trajectories = build_teachers(dataset, teachers, None, config, scoped)
    data = load_data(base)
    best = max(teacher_rows, key=lambda r: r["test"]["recall@20"])
    best_valid = max(teacher_rows, key=lambda r: r["valid"][base["valid_metric"].lower()])
    equal = ensemble_row(base, data, trajectories, teacher_rows, config_fusion(base, teachers), "equal weights")
    out = {"dataset": dataset, "seed": seed, "date": date.today().isoformat(), "machine": machine(),
           "versions": library_versions(), "valid_metric": base["valid_metric"].lower(), "users": None,
           "teachers": {r["name"]: {"test": {m: r["test"][m] for m in METRICS},
                                    "valid": r["valid"][base["valid_metric"].lower()]} for r in teacher_rows},
           "best_teacher": best["name"], "best_teacher_on_validation": best_valid["name"],
           "equal_weights": {"test": {m: equal["test"][m] for m in METRICS},
                             "valid": equal["valid"][base["valid_metric"].lower()]},
           "methods": {}}
    path = RECORDS / f"{dataset}-seed-{seed}.json"
    if path.exists() and set(fits) != set(ALL_FITS):
        out = merge_into(json.loads(path.read_text()), out)
    for method in fits:
        if method == CEILING:
            cfg = make_config("HetCompEnsemble", dataset, None, {**config, "ensemble_fit_metric": "Recall@20"}, [])
            fusion, fit_s = ceiling(cfg, data, trajectories)
            row = ensemble_row(cfg, data, trajectories, teacher_rows, fusion, "ceiling")
            out[CEILING] = {"fusion": fusion.describe(), "weights": dict(zip(teachers, fusion.weights)),
                            "fit_metric": "recall@20", "test_fit_score": fusion.score, "fit_s": fit_s,
                            "valid_recbole": row["valid"][base["valid_metric"].lower()],
                            "test": {m: row["test"][m] for m in METRICS},
                            "date": date.today().isoformat(), "machine": machine()}
            print(f"{dataset} seed {seed} ceiling: {fusion.describe()}; test recall@20 {row['test']['recall@20']:.4f}",
                  flush=True)
            continue
        over = FITS[method]
        cfg = make_config("HetCompEnsemble", dataset, None, {**config, **over}, [])
        start = time.perf_counter()
        chosen = choose_fusion(cfg, data, trajectories)  # no store: a fresh fit, timed whole
        total_s = time.perf_counter() - start
        row = ensemble_row(cfg, data, trajectories, teacher_rows, chosen.fusion, "fitted on validation")
        rec = chosen.record
        out["users"] = rec["users"]
        out["methods"][method] = {
            "fusion": chosen.fusion.describe(), "weights": dict(zip(teachers, chosen.fusion.weights)),
            "fit_s": rec["fit_s"], "fit_and_held_out_s": total_s,
            "evaluations": sum(t["evaluations"] for t in rec["trace"]),
            "fit_metric": rec["settings"]["metric"], "valid_fit_score": rec["valid_score"],
            "valid_recbole": row["valid"][base["valid_metric"].lower()],
            "held_out": {k: rec["held_out"].get(k) for k in ("fitted", "equal_weights", "best_teacher")},
            "test": {m: row["test"][m] for m in METRICS}, "params": row["params"],
            "infer_ms_per_1k_users": row["infer_ms_per_1k_users"],
            "date": date.today().isoformat(), "machine": machine()}
        print(f"{dataset} seed {seed} {method}: {chosen.fusion.describe()}; valid {rec['valid_score']:.4f}; "
              f"test recall@20 {row['test']['recall@20']:.4f} (best teacher {best['name']} "
              f"{best['test']['recall@20']:.4f}, equal {equal['test']['recall@20']:.4f}); fit {rec['fit_s']:.2f} s",
              flush=True)
    RECORDS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")


class OtherTeachers(ValueError):
    """The teachers measured now do not test as a seed's record's."""


def merge_into(record, fresh):
    """``record`` (a seed's stored record) ready to take fits measured now, whose teachers and equal weights are
    ``fresh``'s: only if they test exactly as the record's (:class:`OtherTeachers` otherwise). Its other fits are
    kept."""
    if record["teachers"] != fresh["teachers"] or record["equal_weights"]["test"] != fresh["equal_weights"]["test"]:
        differ = sorted(t for t in fresh["teachers"] if record["teachers"].get(t) != fresh["teachers"][t])
        raise OtherTeachers(f"{fresh['dataset']} seed {fresh['seed']}: the teachers here "
                            f"({', '.join(differ) or 'the set'}) do not test as the record's; fits of other teachers "
                            "do not compare: measure every fit (no --fits) to replace the record")
    return {**record, "methods": dict(record["methods"])}


def _mean_std(xs):
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def _cell(xs, fmt="{:.4f}"):
    mean, std = _mean_std(xs)
    return fmt.format(mean) + ("" if std is None else " ± " + fmt.format(std))


def _held_out_ratio(record, method):
    """The held-out fitted score over the held-out best teacher's, both in the fit's own metric. Records made before
    every fit stored its held-out best teacher lack it for coordinate fits: there the greedy fit's, of the same metric
    and halves, is the same number."""
    own = record["methods"][method]["held_out"]
    best = own.get("best_teacher")
    if best is None:
        metric = lambda m: record["methods"][m].get("fit_metric", record["valid_metric"])  # noqa: E731
        if metric(method) != metric("greedy"):
            raise ValueError(f"{record['dataset']} seed {record['seed']}, {method}: no held-out best teacher in "
                             f"{metric(method)} recorded; rerun this seed")
        best = record["methods"]["greedy"]["held_out"]["best_teacher"]
    return own["fitted"] / best


def notes(recs):
    """{note: the seeds whose record carries it}, in seed order: a note several seeds share is printed once."""
    out = {}
    for r in recs:
        if r.get("note"):
            out.setdefault(r["note"], []).append(r["seed"])
    return out


def aggregate():
    records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]
    by_dataset = {}
    for r in records:
        by_dataset.setdefault(r["dataset"], []).append(r)
    lines = ["# The fitted ensemble", "",
             "Generated by `python benchmarks/ensemble_fit.py`: for each seed's teachers (the accuracy runs'), the "
             "best single teacher, the equal-weight ensemble and the ensemble fitted on validation by each fit; "
             "test metrics through RecBole's evaluator. `greedy` is the run's default; `greedy, fit on recall@20` "
             "is the same search maximising `ensemble_fit_metric=Recall@20`, the reported cut-off, instead of "
             "`valid_metric`. Held-out: fit on half of the validation users, score the other half, both ways round "
             "(mean of the two), over the best teacher of the fitting half scored the same way, in the fit's own "
             "metric. Fit s: seconds of the fit alone; with held-out: the fit and its two held-out half fits, as a "
             "run makes them (the whole of what a run spends on its fit). Targets (test Recall@20, mean over seeds): "
             "fitted >= 1.02x the best single teacher, never below 1.00x.", ""]
    summary = {}
    for dataset, recs in sorted(by_dataset.items()):
        recs.sort(key=lambda r: r["seed"])
        seeds = [r["seed"] for r in recs]
        fits = [m for m in FITS if all(m in r["methods"] for r in recs)]
        partial = [m for m in FITS if m not in fits and any(m in r["methods"] for r in recs)]
        best = [r["teachers"][r["best_teacher"]]["test"]["recall@20"] for r in recs]
        runs = {r["date"] + ", " + r["machine"] for r in recs} | {
            x["date"] + ", " + x["machine"] for r in recs for x in r["methods"].values() if "date" in x}
        shared = notes(recs)
        lines += [f"## {dataset}, seeds {', '.join(map(str, seeds))} ({recs[0]['users']} validation users)", "",
                  f"Runs: {'; '.join(sorted(runs))}.", "",
                  *[f"{seeds_phrase(on).capitalize()}: {note}." for note, on in shared.items()],
                  *([""] if shared else []),
                  "| row | test Recall@20 | test NDCG@20 | / best teacher (Recall@20) | valid "
                  f"{recs[0]['valid_metric']} | held-out / best teacher | fit s | with held-out s |",
                  "|---|---|---|---|---|---|---|---|"]
        lines.append(f"| best teacher ({', '.join(sorted({r['best_teacher'] for r in recs}))}) | {_cell(best)} | "
                     f"{_cell([r['teachers'][r['best_teacher']]['test']['ndcg@20'] for r in recs])} | 1 | "
                     f"{_cell([r['teachers'][r['best_teacher_on_validation']]['valid'] for r in recs])} | 1 | - | - |")
        eq = [r["equal_weights"]["test"]["recall@20"] for r in recs]
        held = [r["methods"]["greedy"]["held_out"] for r in recs]
        lines.append(f"| equal weights | {_cell(eq)} | "
                     f"{_cell([r['equal_weights']['test']['ndcg@20'] for r in recs])} | "
                     f"{_cell([e / b for e, b in zip(eq, best)], '{:.3f}')} | "
                     f"{_cell([r['equal_weights']['valid'] for r in recs])} | "
                     f"{_cell([h['equal_weights'] / h['best_teacher'] for h in held], '{:.3f}')} | - | - |")
        summary[dataset] = {"seeds": seeds, "best_teacher_recall@20": _mean_std(best)[0],
                            "equal_weights_recall@20": _mean_std(eq)[0]}
        for method in fits + partial:
            has = [r for r in recs if method in r["methods"]]
            m = [r["methods"][method] for r in has]
            fit = [x["test"]["recall@20"] for x in m]
            ratio = [x["test"]["recall@20"] / r["teachers"][r["best_teacher"]]["test"]["recall@20"]
                     for x, r in zip(m, has)]
            held = [_held_out_ratio(r, method) for r in has]
            only = "" if method in fits else f" ({seeds_phrase([r['seed'] for r in has])} only)"
            lines.append(f"| fitted, {method}{only} | {_cell(fit)} | {_cell([x['test']['ndcg@20'] for x in m])} | "
                         f"{_cell(ratio, '{:.3f}')} | {_cell([x['valid_recbole'] for x in m])} | "
                         f"{_cell(held, '{:.3f}')} | {_cell([x['fit_s'] for x in m], '{:.2f}')} | "
                         f"{_cell([x['fit_and_held_out_s'] for x in m], '{:.2f}')} |")
            summary[dataset][method] = {"recall@20": _mean_std(fit)[0], "ratio_to_best_teacher": _mean_std(ratio)[0],
                                        "held_out_ratio_to_best_teacher": _mean_std(held)[0],
                                        "fit_s": _mean_std([x["fit_s"] for x in m])[0],
                                        "fit_and_held_out_s": _mean_std([x["fit_and_held_out_s"] for x in m])[0],
                                        "ratio_per_seed": dict(zip([r["seed"] for r in has], ratio)),
                                        "held_out_ratio_per_seed": dict(zip([r["seed"] for r in has], held))}
        tops = [r for r in recs if CEILING in r]
        if tops:
            top = [r[CEILING]["test"]["recall@20"] for r in tops]
            top_ratio = [t / r["teachers"][r["best_teacher"]]["test"]["recall@20"] for t, r in zip(top, tops)]
            only = "" if len(tops) == len(recs) else f" ({seeds_phrase([r['seed'] for r in tops])} only)"
            lines.append(f"| ceiling: the default search fitted on test Recall@20 (reads the test split: not a method)"
                         f"{only} | {_cell(top)} | {_cell([r[CEILING]['test']['ndcg@20'] for r in tops])} | "
                         f"{_cell(top_ratio, '{:.3f}')} | {_cell([r[CEILING]['valid_recbole'] for r in tops])} | - | "
                         f"{_cell([r[CEILING]['fit_s'] for r in tops], '{:.2f}')} | - |")
            summary[dataset][CEILING] = {"recall@20": _mean_std(top)[0], "ratio_to_best_teacher": _mean_std(top_ratio)[0],
                                         "ratio_per_seed": dict(zip([r["seed"] for r in tops], top_ratio))}
        lines.append("")
        for method in fits:
            g = summary[dataset][method]["ratio_to_best_teacher"]
            below = {s: r for s, r in summary[dataset][method]["ratio_per_seed"].items() if r < 1.0}
            floor = "met" if not below else "not met: " + ", ".join(f"seed {s} at {r:.3f}x" for s, r in below.items())
            lead = "Targets, the default fit (greedy)" if method == "greedy" else f"The same targets, {method}"
            lines.append(f"{lead}: {g:.3f}x the best single teacher's test Recall@20 on the mean "
                         f"(>= 1.02: {'met' if g >= 1.02 else 'not met'}); >= 1.00 in every seed: {floor}.")
        for method in partial:
            own = summary[dataset][method]
            on = list(own["ratio_per_seed"])
            default = summary[dataset]["greedy"]
            where, mean = seeds_phrase(on), statistics.fmean
            lines.append(f"{method.capitalize()}, on {where} (where it was measured): "
                         f"{own['ratio_to_best_teacher']:.3f}x the best single teacher's test Recall@20 against the "
                         f"default fit's {mean([default['ratio_per_seed'][x] for x in on]):.3f}x on the same "
                         f"{where.partition(' ')[0]}; held out, {own['held_out_ratio_to_best_teacher']:.3f}x "
                         f"against {mean([default['held_out_ratio_per_seed'][x] for x in on]):.3f}x.")
        if tops:
            own = summary[dataset][CEILING]
            on = list(own["ratio_per_seed"])
            greedy = statistics.fmean([summary[dataset]["greedy"]["ratio_per_seed"][x] for x in on])
            lines.append(f"Ceiling, on {seeds_phrase(on)}: fitted on the test split itself, the default search reaches "
                         f"{own['ratio_to_best_teacher']:.3f}x the best single teacher's test Recall@20 (the default "
                         f"fit on validation: {greedy:.3f}x). That is in-sample, on the very items it is scored on: a "
                         "fit on validation, which never sees them, is not expected to reach it.")
        lines += ["", "Chosen fusions:", ""]
        lines += [f"- seed {r['seed']}, {method}: {r['methods'][method]['fusion']}" for r in recs
                  for method in fits + partial if method in r["methods"]]
        lines += [f"- seed {r['seed']}, ceiling: {r[CEILING]['fusion']}" for r in tops]
        lines.append("")
    atomic_write_text(RESULTS / "ensemble_fit.md", "\n".join(lines))
    atomic_write_text(RESULTS / "ensemble_fit.json", json.dumps({"summary": summary, "records": records}, indent=1)
                      + "\n")
    print("\n".join(lines))


def main():
    parser = seed_arguments(__doc__.split("\n")[0])
    parser.add_argument("--fits", action="append", default=None,
                        help=f"a fit to measure, repeatable (default all: {'; '.join(ALL_FITS)})")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fits = ALL_FITS if args.fits is None else tuple(args.fits)
    unknown = [f for f in fits if f not in ALL_FITS]
    if unknown:
        sys.exit(f"--fits names {'; '.join(unknown)}: choose among {'; '.join(ALL_FITS)}")
    if not args.only_aggregate:
        for dataset in args.datasets.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                try:
                    measure(dataset, seed, Path(args.citeulike), fits)
                except OtherTeachers as exc:
                    sys.exit(str(exc))
    aggregate()


if __name__ == "__main__":
    main()
