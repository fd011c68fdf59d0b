"""Student variants: HetComp with some of its own settings changed, on an accuracy run's teachers.

    python benchmarks/student_variants.py [--dataset citeulike-t] [--seeds 2021]
                                          [--variant KEY=VALUE[,KEY=VALUE...]]... [--citeulike PATH]
                                          [--threads N] [--only-aggregate]

Each ``--variant`` (repeatable; default ``embedding_size=16``) is a set of the student's keys, given
to the pipeline as ``--HetComp.KEY=VALUE``: the teachers never see them, and the MF baseline
follows the student's ``embedding_size`` only. E.g. ``--variant embedding_size=32`` (how much of
the gap to the ensemble is the d = 6 student's size?), ``--variant weight_decay=0`` (the same as
infinite loss weights under Adam: ``loss_weights.py``). A variant cannot change the ensemble: the fusion is the
run's, and a fusion key scoped to the student is an error.

For each seed and variant, one pipeline run as in ``accuracy.py`` (same split, same teachers,
taken from the accuracy run's trajectory store when it is there) without ablations: the
ensemble, the student and the MF baseline. Runs go to
``benchmarks/.runs/<dataset>/variant-<name>-seed-<seed>/`` and their rows are recorded in
``benchmarks/results/runs/<dataset>/student-variants/seed-<seed>-<name>.json`` (committed), where
the name is the settings joined, e.g. ``embedding_size-16,weight_decay-0``; a value is taken as
written (``1e-5`` and ``0.00001`` are two variants). The table puts each recorded variant
beside the default student of the accuracy record of the same seed
(``results/runs/<dataset>/seed-<seed>.json``): ``benchmarks/results/student_variants.{md,json}``.
Variants that differ in ``kd_method`` only (``--variant kd_method=rrd,hetcomp_batch=users`` beside
``--variant hetcomp_batch=users``) are also compared as distillation methods, as accuracy.py compares
the pipeline's KD rows (:func:`kd_comparisons`).

Teachers retrained on another CPU can reach other weights (CML and NeuMF do between an Intel Xeon and an AMD EPYC),
so a run there distils another target than its seed's record: it is recorded apart (:func:`variant_record`), and
a method with such a seed is set against HetComp rerun on the same retrained teachers (:func:`retrained_pairs`:
``--variant embedding_size=16`` beside ``--variant embedding_size=16,kd_method=dcd`` on that machine).
"""

import argparse
import hashlib
import json
import re
import statistics
import sys
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import (  # noqa: E402
    CITEULIKE,
    RECORDS,
    RESULTS,
    RUNS,
    STUDENT,
    distilled,
    kd_comparison,
    kd_markdown,
    kd_rows,
    learnt_ensemble,
    record_run,
    row_key,
    run_one,
    target_differs,
    unused_differ,
)

from recbole_hetcomp.run.results import atomic_write_text  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402

METRICS = ("recall@20", "ndcg@20")
FOLDER = "student-variants"
SETTING = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=([A-Za-z0-9_.+-]+)")


def parse_variant(text):
    """``'KEY=VALUE[,KEY=VALUE...]'`` -> {key: value}, values kept as written (RecBole parses them)."""
    settings = {}
    for item in text.split(","):
        match = SETTING.fullmatch(item.strip())
        if not match:
            raise SystemExit(f"--variant {text!r}: {item.strip()!r} is not KEY=VALUE (letters, digits, '_', '.', "
                             "'+', '-'); e.g. --variant embedding_size=16,weight_decay=0")
        if match[1] in settings:
            raise SystemExit(f"--variant {text!r} sets {match[1]!r} twice: give each key once")
        settings[match[1]] = match[2]
    return settings


def variant_name(settings):
    """``key-value`` pairs joined by ',' (neither '-' in a key nor ',' anywhere can occur in a setting)."""
    return ",".join(f"{k}-{v}" for k, v in sorted(settings.items()))


def variant_dir(dataset, seed, settings):
    return RUNS / dataset / f"variant-{variant_name(settings)}-seed-{seed}"


def variant_record(dataset, seed, settings, rows=None):
    """Where a variant's run of ``seed`` is recorded. A run whose students distilled another target than the accuracy
    record of its seed (``rows`` given; teachers retrained on another CPU reach other weights) is recorded apart,
    under ``-teachers-<teachers_id>``: it never replaces a record on the accuracy run's teachers, and HetComp rerun
    there sits beside the method it pairs with (:func:`retrained_pairs`)."""
    path = RECORDS / dataset / FOLDER / f"seed-{seed}-{variant_name(settings)}.json"
    base = RECORDS / dataset / f"seed-{seed}.json"
    if rows is not None and base.exists() and target_differs(rows, json.loads(base.read_text())["rows"]):
        path = path.with_name(f"{path.stem}-teachers-{teachers_id(rows)}.json")
    return path


def table(dataset):
    """One line per recorded (seed, variant), each seed's default student (the accuracy record) first."""
    lines = []
    for path in sorted((RECORDS / dataset / FOLDER).glob("seed-*.json")):
        rec = json.loads(path.read_text())
        base = RECORDS / dataset / f"seed-{rec['seed']}.json"
        sources = ([({}, json.loads(base.read_text()))] if base.exists() else []) + [(rec["settings"], rec)]
        reference = sources[0][1]["rows"]  # the accuracy run's: a line on the same target distilled its teachers
        for settings, r in sources:
            rows = {row_key(x): x for x in r["rows"]}
            student = rows.get("HetComp") or rows["HetComp (learns equal weights)"]
            mf = next(x for x in r["rows"] if x["kind"] == "baseline")
            teachers = [x for x in r["rows"] if x["kind"] == "teacher"]
            best = max(teachers, key=lambda x: x["test"]["recall@20"])
            line = {"seed": rec["seed"], "settings": settings, "params": student["params"],
                    "student": {m: student["test"][m] for m in METRICS},
                    "ensemble": {m: rows[learnt_ensemble(r["rows"])]["test"][m] for m in METRICS},
                    "best_teacher": best["name"], "best_teacher_recall@20": best["test"]["recall@20"],
                    "mf": {m: mf["test"][m] for m in METRICS}, "mf_name": mf["name"], "date": r.get("date"),
                    "recbole_hetcomp": r.get("recbole_hetcomp", "0.1.0"), "machine": r.get("machine"),
                    "teachers_differ": target_differs(r["rows"], reference),
                    "unused_teachers_differ": unused_differ(r["rows"], reference),
                    "teachers_id": teachers_id(r["rows"])}
            if line not in lines:
                lines.append(line)
    return lines


def teachers_id(rows):
    """A short fingerprint of what a run's students distilled (:func:`accuracy.distilled`: the fusion and its
    teachers of weight above 0): two runs with the same one distilled the same target."""
    return hashlib.sha1(json.dumps(distilled(rows), sort_keys=True).encode()).hexdigest()[:12]


def kd_label(method):
    """The row name of a ``kd_method`` value: the pipeline's for its baselines, accuracy.py's READINGS for the others."""
    return {over["kd_method"]: label for label, over in kd_rows()}.get(method, f"kd_method={method}")


def how_learnt(settings):
    """``(method, rest)``: how a line's student learnt, and its other settings. The method is ``hetcomp`` for HetComp
    with its curriculum whole, else a row name: the pipeline's ablation row name where a HetComp line switches a part
    of the curriculum off as that ablation does (``dkc=False``: ``HetComp w/o DKC (ensemble KD)``), or
    :func:`kd_label` of its ``kd_method``. So ablations run as variants are compared with HetComp at the same
    settings like the KD methods are."""
    from recbole_hetcomp.run.pipeline import ABLATIONS

    rest = {k: v for k, v in settings.items() if k != "kd_method"}
    method = settings.get("kd_method", "hetcomp")
    if method != "hetcomp":
        return kd_label(method), rest
    for label, over in ABLATIONS:
        [(key, value)] = over.items()
        if key in rest and str(rest[key]).lower() == str(value).lower():
            return label, {k: v for k, v in rest.items() if k != key}
    return method, rest


def kd_comparisons(lines):
    """Distillation methods compared where the variants allow it: the lines are grouped by their settings other than
    how the student learnt (:func:`how_learnt`: ``kd_method``, or an ablation's switch), and in each group that has
    both HetComp (``kd_method`` unset or ``hetcomp``, curriculum whole) and another method or ablation,
    :func:`accuracy.kd_comparison` sets them side by side, with MF w/o KD of HetComp's runs. A method's seed counts
    only where it distilled the same target (fusion and teachers) as HetComp's line of that seed. Returns
    ``[{"settings", **comparison}]``."""
    groups, retrained = {}, {}
    for x in lines:
        method, rest = how_learnt(x["settings"])
        base = json.dumps(rest, sort_keys=True)
        if x["teachers_differ"]:  # on retrained teachers: paired apart, with HetComp on the same ones
            retrained.setdefault(base, []).append((method, x))
            continue
        groups.setdefault(base, {}).setdefault(method, {}).setdefault(x["seed"], x)  # the first line of a seed wins

    def row(name, kind, values):
        seeds = sorted(values)
        return {"name": name, "kind": kind, "seeds": seeds,
                "test": {"recall@20": {"values": [values[s] for s in seeds]}}}

    out = []
    for base, methods in groups.items():
        hetcomp = methods.get("hetcomp")
        if not hetcomp or len(methods) < 2:
            continue
        mf = next(iter(hetcomp.values()))["mf_name"]
        table = [row(STUDENT, "student", {s: x["student"]["recall@20"] for s, x in hetcomp.items()}),
                 row(mf, "baseline", {s: x["mf"]["recall@20"] for s, x in hetcomp.items() if x["mf_name"] == mf})]
        for method, by_seed in methods.items():
            same = {s: x["student"]["recall@20"] for s, x in on_the_same_teachers(by_seed, hetcomp).items()}
            if method != "hetcomp" and same:  # an ablation (how_learnt) is compared as one more way to distil
                table.append(row(method, "kd baseline", same))
        kd = kd_comparison(table)
        if kd:
            pairs = retrained_pairs(methods, retrained.get(base, []))
            kd["partial"] = [r for r in kd["partial"] if r["name"] not in {p["name"] for p in pairs}]
            out.append({"settings": json.loads(base), **kd, "retrained": pairs})
    return out


def on_the_same_teachers(by_seed, hetcomp):
    """The lines of ``by_seed`` (seed -> line) that distilled the same target as HetComp's line of their seed."""
    return {s: x for s, x in by_seed.items() if s in hetcomp and x["teachers_id"] == hetcomp[s]["teachers_id"]}


def retrained_pairs(methods, retrained):
    """The methods that have seeds recorded on retrained teachers only (``retrained``: ``(method, line)`` of lines
    whose target differs from the accuracy record's), each such seed paired with HetComp's line on the same teachers
    (same :func:`teachers_id`). Per method: its Recall@20 over its seeds (on the accuracy run's teachers where it has
    them, else on the retrained ones), HetComp's on the same teachers seed by seed, and HetComp's leads. A retrained
    seed without HetComp on its teachers is left out (the per-seed table still lists it)."""
    hetcomp_on = {(x["seed"], x["teachers_id"]): x for m, x in retrained if m == "hetcomp"}
    out = []
    for name in dict.fromkeys(m for m, _ in retrained if m != "hetcomp"):
        own = on_the_same_teachers(methods.get(name, {}), methods["hetcomp"])
        pairs = {s: (x, methods["hetcomp"][s]) for s, x in own.items()}
        for m, x in retrained:
            key = (x["seed"], x["teachers_id"])
            if m == name and x["seed"] not in pairs and key in hetcomp_on:
                pairs[x["seed"]] = (x, hetcomp_on[key])
        moved = sorted(s for s in pairs if s not in own)
        if not moved:
            continue
        seeds = sorted(pairs)
        values = [pairs[s][0]["student"]["recall@20"] for s in seeds]
        hetcomp = [pairs[s][1]["student"]["recall@20"] for s in seeds]
        leads = [h - v for h, v in zip(hetcomp, values)]
        out.append({"name": name, "seeds": seeds, "values": values, "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else None, "hetcomp": hetcomp,
                    "hetcomp_leads": leads, "hetcomp_ahead_in": sum(x > 0 for x in leads),
                    "retrained": {s: {"differ": pairs[s][0]["teachers_differ"], "machine": pairs[s][0]["machine"]}
                                  for s in moved}})
    return out


def retrained_markdown(pairs):
    """Lines of :func:`retrained_pairs`: each method over its seeds, and HetComp's lead on the same teachers."""
    lines = []
    for r in pairs:
        where = ", ".join(f"{s} (teachers retrained: {', '.join(r['retrained'][s]['differ'])} differ from the "
                          f"accuracy run's; {r['retrained'][s]['machine']})" if s in r["retrained"] else str(s)
                          for s in r["seeds"])
        spread = "" if r["std"] is None else f" ± {r['std']:.4f}"
        lines += ["", f"{r['name']} over seeds {where}: {r['mean']:.4f}{spread}. Against HetComp on the same teachers, "
                      f"seed by seed: HetComp ahead in {r['hetcomp_ahead_in']} of {len(r['seeds'])} ("
                      + ", ".join(f"{s}: {h:.4f} against {v:.4f}, {h - v:+.4f}"
                                  for s, h, v in zip(r["seeds"], r["hetcomp"], r["values"])) + ")."]
    return lines


def summary(lines):
    """Per variant, over the seeds it has: mean and sample std of its test Recall@20, and the means of its ratio
    to the same seed's default student, fitted ensemble and best teacher."""
    by = {}
    for x in lines:  # one line a seed: on the accuracy run's teachers where the seed has one, else a retrained one
        seeds = by.setdefault(json.dumps(x["settings"], sort_keys=True), {})
        kept = seeds.get(x["seed"])
        if kept is None or (kept["teachers_differ"] and not x["teachers_differ"]):
            seeds[x["seed"]] = x
    by = {key: list(seeds.values()) for key, seeds in by.items()}
    default = {x["seed"]: x["student"]["recall@20"] for x in by.get("{}", [])}
    # The ratio to the default student compares like with like only where the line distilled the accuracy run's target.
    same = lambda x: x["seed"] in default and not x["teachers_differ"]  # noqa: E731
    out = []
    for key, xs in by.items():
        if key == "{}":
            continue
        r = [x["student"]["recall@20"] for x in xs]
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        out.append({"settings": xs[0]["settings"], "seeds": [x["seed"] for x in xs], "recall@20": mean(r),
                    "std": statistics.stdev(r) if len(r) > 1 else None,
                    "over_default": mean([x["student"]["recall@20"] / default[x["seed"]] for x in xs if same(x)])
                    if any(same(x) for x in xs) else None,
                    "over_default_seeds": [x["seed"] for x in xs if same(x)],
                    "retrained_seeds": [x["seed"] for x in xs if x["teachers_differ"]],
                    "over_ensemble": mean([x["student"]["recall@20"] / x["ensemble"]["recall@20"] for x in xs]),
                    "over_best_teacher": mean([x["student"]["recall@20"] / x["best_teacher_recall@20"] for x in xs])})
    return out


def markdown(dataset, lines):
    rows = summary(lines)
    out = [f"## {dataset}", "", "Per variant, over the seeds it has (mean, sample std where 2 or more; ratios are means "
           "of each seed's ratio):", "",
           "| student settings | seeds | HetComp Recall@20 | / the seed's default student | / ensemble | / best teacher |",
           "|---|---|---|---|---|---|"]
    for x in rows:
        settings = ", ".join(f"{k}={v}" for k, v in x["settings"].items())
        spread = f" ± {x['std']:.4f}" if x["std"] is not None else ""
        ratio = f"{x['over_default']:.3f}" if x["over_default"] is not None else "-"
        if x["over_default"] is not None and x["over_default_seeds"] != x["seeds"]:
            ratio += f" (seeds {', '.join(map(str, x['over_default_seeds']))})"
        seeds = ", ".join(f"{s} (teachers retrained)" if s in x["retrained_seeds"] else str(s) for s in x["seeds"])
        out.append(f"| {settings} | {seeds} | {x['recall@20']:.4f}{spread} | {ratio} | "
                   f"{x['over_ensemble']:.3f} | {x['over_best_teacher']:.3f} |")
    out += ["", "Each seed:", "",
           "| seed | student settings | params | HetComp Recall@20 | NDCG@20 | / ensemble | / best teacher | "
           "MF w/o KD of the run: Recall@20 | HetComp / MF | teachers | run | recbole_hetcomp |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in lines:
        s, e, m = x["student"]["recall@20"], x["ensemble"]["recall@20"], x["mf"]["recall@20"]
        settings = ", ".join(f"{k}={v}" for k, v in x["settings"].items()) or "defaults (the accuracy run)"
        teachers = (f"differ from the accuracy run's: {', '.join(x['teachers_differ'])} ({x['machine']})"
                    if x["teachers_differ"] else "the accuracy run's")
        if not x["teachers_differ"] and x.get("unused_teachers_differ"):
            teachers += (f"; {', '.join(x['unused_teachers_differ'])} (weight 0, not distilled) trained to other "
                         f"metrics ({x['machine']})")
        out.append(f"| {x['seed']} | {settings} | {x['params']:,} | {s:.4f} | {x['student']['ndcg@20']:.4f} "
                   f"| {s / e:.3f} (ensemble {e:.4f}) | {s / x['best_teacher_recall@20']:.3f} ({x['best_teacher']} "
                   f"{x['best_teacher_recall@20']:.4f}) | {m:.4f} ({x['mf_name']}) | {s / m:.2f} | {teachers} "
                   f"| {x['date']} "
                   f"| {x['recbole_hetcomp']} |")
    for kd in kd_comparisons(lines):
        settings = ", ".join(f"{k}={v}" for k, v in kd["settings"].items()) or "the defaults"
        out += ["", *kd_markdown(kd, f"same student ({settings}), teachers and ensemble"),
                *retrained_markdown(kd.get("retrained", []))]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="citeulike-t")
    p.add_argument("--seeds", default="2021")
    p.add_argument("--variant", action="append", help="KEY=VALUE[,KEY=VALUE...] of the student (repeatable; "
                   "default embedding_size=16)")
    p.add_argument("--citeulike", default=str(CITEULIKE), help="path of CiteULike-t's users.dat")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--only-aggregate", action="store_true", help="do not run, tabulate recorded runs only")
    args = p.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant or ["embedding_size=16"]]
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.only_aggregate:
        for seed in (int(s) for s in args.seeds.split(",") if s):
            for settings in variants:
                out = variant_dir(args.dataset, seed, settings)
                if not (out / "results.json").exists():
                    print(f"== {args.dataset} seed {seed} {variant_name(settings)}", flush=True)
                    run_one(args.dataset, seed, args.citeulike, ablations=False, student=settings, out=out)
                rows = json.loads((out / "results.json").read_text())["rows"]
                record_run(out, args.dataset, seed, variant_record(args.dataset, seed, settings, rows),
                           settings=settings)
    datasets = sorted(p.name for p in RECORDS.iterdir() if (p / FOLDER).is_dir()) if RECORDS.is_dir() else []
    results = {d: table(d) for d in datasets}
    atomic_write_text(RESULTS / "student_variants.json", json.dumps(
        {"benchmark": "student_variants", "aggregated": date.today().isoformat(), "versions": library_versions(),
         "results": results, "summary": {d: summary(lines) for d, lines in results.items()},
         "kd_comparisons": {d: kd_comparisons(lines) for d, lines in results.items()}}, indent=1) + "\n")
    text = ["# Student variants: HetComp with some of its settings changed, same teachers and split", "",
            "Each line: one seed's test metrics; the defaults line is the accuracy benchmark's run of that seed. "
            "See benchmarks/README.md.", ""] + [markdown(d, lines) + "\n" for d, lines in results.items()]
    atomic_write_text(RESULTS / "student_variants.md", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
