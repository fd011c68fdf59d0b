"""Accuracy over seeds: every teacher, the ensemble, HetComp, its ablations and the MF baseline.

    python benchmarks/accuracy.py [--datasets ml-100k,citeulike-t] [--seeds 2020,2021,2022]
                                  [--citeulike PATH] [--threads N] [--only-aggregate]
                                  [--no-ablations | --add-ablations | --add-kd-baselines
                                   | --teachers-only [NAMES]]

For each dataset and seed it runs the whole pipeline (``run_pipeline`` with ``--ablations``),
exactly as ``python run_recbole_hetcomp.py -d <dataset> --ablations --seed=<seed>`` would:
the seed drives RecBole's split (MovieLens: random 80/10/10 per user), the teachers' and the
students' training. Each run writes ``benchmarks/.runs/<dataset>/seed-<seed>/results.json``
with its own trajectory store beside it; a run whose ``results.json`` exists is not redone, so
the script can be stopped and started again. Each finished run's rows are recorded in
``benchmarks/results/runs/<dataset>/seed-<seed>.json`` (committed: ``.runs`` is not, and a
fresh clone must aggregate to the same tables). Then the rows of every recorded run are
aggregated (mean and sample standard deviation over seeds of test Recall/NDCG@10/20/50) into
``benchmarks/results/accuracy.{json,md}``, with the targets checked. ``--add-ablations`` instead
trains the ablation rows that recorded runs lack (see :func:`add_ablations`). ``--teachers-only
MultiVAE`` trains only those teachers of the seeds into the store (see :func:`train_teachers`), so that
several processes, each with some of the teachers, can fill it side by side before the run.

CiteULike-t follows the paper's protocol (5-core users, per-user random 60/20/20 split, see
:mod:`recbole_hetcomp.data.citeulike`); its split is fixed (``split_seed: 0``) and the seed varies
training only. ``--datasets ml-1m`` reads ``data/ml-1m.zip`` (``python benchmarks/ml1m_data.py`` builds it from the
real ml-1m); it is converted once into ``data/ml-1m/``.

Accuracy does not depend on what else runs on the machine; the training times recorded here do,
so the timing benchmarks are separate scripts (``cost.py``, ``curriculum_speed.py``). It does depend
on the vector kernels torch dispatches to (AVX2 or AVX-512: see benchmarks/README.md), which
each run's machine line names.
"""

import argparse
import json
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from timing import machine  # noqa: E402  (benchmarks/timing.py; ensemble_variants imports it from here)

from recbole_hetcomp import __version__  # noqa: E402
from recbole_hetcomp.run.results import METRIC_COLUMNS, atomic_write_text  # noqa: E402
from recbole_hetcomp.trajectories.store import library_versions  # noqa: E402

RUNS = ROOT / "benchmarks" / ".runs"
RESULTS = ROOT / "benchmarks" / "results"
RECORDS = RESULTS / "runs"
CITEULIKE = ROOT.parent / "shared" / "data" / "citeulike-t" / "users.dat"
# Teachers per dataset (default: properties/overall.yaml's six). On CiteULike-t's 22,383 items this
# 2-core CPU machine cannot afford NeuMF (its full ranking scores every user-item pair through an
# MLP: about a minute per validation pass, every epoch) nor EASE (a dense 22k x 22k inverse: ~12 GB
# and ~4 GB of weights per stored teacher); the four others still span MF, metric learning, graph
# and autoencoder families.
TEACHERS = {"citeulike-t": ["BPR", "CML", "LightGCN", "MultiVAE"]}
# Teachers validate every epoch by default; on CiteULike-t one validation pass (4,726 users x
# 22,383 items) costs far more than an epoch of training, so there they validate every 5 epochs
# (their trajectory points fall on those evaluations). Students keep their own settings.
TEACHER_EVAL_STEP = {"citeulike-t": 5}


# Row names of the kd_method values that are not among the pipeline's KD_BASELINES (our earlier readings of DCD and
# CL-DRD, docs/kd.md): --add-kd-baselines trains them only where --kd-methods names them.
READINGS = {"dcd_overview": "DCD, overview reading (KD of the ensemble)",
            "cldrd_group": "CL-DRD, group reading (KD of the ensemble)"}


def kd_rows():
    """(row name, config overrides) of every ``kd_method`` the benchmarks train: the pipeline's KD_BASELINES, then
    :data:`READINGS`."""
    from recbole_hetcomp.run.pipeline import KD_BASELINES

    return (*KD_BASELINES, *((label, {"kd_method": method}) for method, label in READINGS.items()))


def run_dir(dataset, seed):
    return RUNS / dataset / f"seed-{seed}"


def pipeline_settings(dataset, seed, citeulike):
    """(teachers or None for the defaults, config dict, ``--<Teacher>.key=value`` arguments) of
    the accuracy runs: the same for every script that re-uses their teachers from the store."""
    config = {"seed": seed, "show_progress": False, "trajectory_store": str(RUNS / dataset / "trajectories")}
    if dataset == "citeulike-t":
        config["dataset_archive"] = str(citeulike)
    elif dataset in ("ml-1m", "ml-10m", "ml-20m"):  # data/<name>.zip, built by benchmarks/ml1m_data.py for ml-1m
        config["data_path"] = str(ROOT / "data")
    teachers = TEACHERS.get(dataset)
    step = TEACHER_EVAL_STEP.get(dataset)
    return teachers, config, [f"--{t}.eval_step={step}" for t in teachers] if step else []


def teacher_lines_as_yaml(scoped, student, out):
    """(the other arguments, [yaml file] or None): a student of a teacher's model (``student=LightGCN``) makes that
    teacher's ``--<Model>.key=value`` ambiguous on the command line, so its keys go to ``out``/teacher_keys.yaml as
    ``<Model>.key: value`` lines, which reach the teacher only."""
    prefix = f"--{student}.".lower() if student else None
    mine = [a for a in scoped if prefix and a.lower().startswith(prefix)]
    if not mine:
        return scoped, None
    out.mkdir(parents=True, exist_ok=True)
    path = out / "teacher_keys.yaml"
    atomic_write_text(path, "".join(f"{a[2:].split('=', 1)[0]}: {a.split('=', 1)[1]}\n" for a in mine))
    return [a for a in scoped if a not in mine], [str(path)]


def run_one(dataset, seed, citeulike, ablations=True, student=None, out=None, kd_baselines=False):
    """One pipeline run into ``out`` (default :func:`run_dir`); ``student`` ({key: value}) sets the
    student's own keys (``--HetComp.key=value``; its ``embedding_size`` also sets the MF baseline's)
    and leaves the teachers as they are."""
    from recbole_hetcomp.run.pipeline import run_pipeline

    out = out or run_dir(dataset, seed)
    teachers, config, scoped = pipeline_settings(dataset, seed, citeulike)
    scoped, files = teacher_lines_as_yaml(scoped, (student or {}).get("student"), out)
    scoped += [f"--HetComp.{key}={value}" for key, value in (student or {}).items()]
    run_pipeline(dataset, teachers=teachers, config_files=files, config_dict=config, cmd_args=scoped or None,
                 output=out, ablations=ablations, kd_baselines=kd_baselines)
    atomic_write_text(out / "run.json", json.dumps({"date": date.today().isoformat(), "machine": machine(),
                                                     "recbole_hetcomp": __version__}) + "\n")


def run_teachers(dataset):
    """The teachers of ``dataset``'s accuracy runs: :func:`pipeline_settings`', else properties/overall.yaml's."""
    teachers, _, _ = pipeline_settings(dataset, 0, CITEULIKE)
    if teachers:
        return list(teachers)
    import yaml

    from recbole_hetcomp.settings import properties_dir

    return list(yaml.safe_load((properties_dir() / "overall.yaml").read_text())["teachers"])


def check_teachers(dataset, names):
    """``names`` (None: all of them) of ``dataset``'s accuracy teachers, as a list; ``ValueError``, one line naming
    the run's teachers, for a name it does not have."""
    known = run_teachers(dataset)
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise ValueError(f"--teachers-only {', '.join(unknown)}: not among {dataset}'s accuracy teachers "
                         f"({', '.join(known)}); name some of those")
    return list(names or known)


def train_teachers(dataset, seed, citeulike, names=None):
    """Train the accuracy runs' teachers ``names`` (default: all of them) of ``seed`` into the store, with the
    settings :func:`run_one` gives them, and nothing else: no student and no record (the teachers-only run's
    own table goes to a temporary folder). A teacher already in the store is re-used. Several processes, each
    given some of the teachers, fill the store side by side; the accuracy run then finds them all there."""
    from recbole_hetcomp.run.pipeline import run_pipeline

    names = check_teachers(dataset, names)
    _, config, scoped = pipeline_settings(dataset, seed, citeulike)
    scoped = [a for a in scoped if a[2:].split(".")[0] in names]  # --<Teacher>.key=value of these teachers only
    with tempfile.TemporaryDirectory() as out:
        run_pipeline(dataset, teachers=names, config_dict=config, cmd_args=scoped or None, output=Path(out) / "run",
                     student=False)


def record_run(run, dataset, seed, path=None, **extra):
    """Copy a finished run's rows, date and machine from its folder in ``.runs`` to ``path``
    (default ``RECORDS/<dataset>/seed-<seed>.json``), with ``extra`` fields beside them."""
    path = path or RECORDS / dataset / f"seed-{seed}.json"
    meta = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
    rows = json.loads((run / "results.json").read_text())["rows"]
    if path.exists():  # rows added to the record later (--add-ablations) are kept where they still distil what
        # the run's own rows of their ensemble do (:func:`target_differs`, row by row: an added row may have learnt
        # the equal-weight ensemble of a record re-run under the fit)
        old, names = json.loads(path.read_text())["rows"], {r["name"] for r in rows}
        added = [r for r in old if r.get("added") and r["name"] not in names]
        dropped = []
        for r in added:
            ensemble = FITTED if r.get("ensemble") == "fitted on validation" else EQUAL
            if target_differs(rows, old, ensemble):
                dropped.append(r)
                continue
            unused = sorted(set(r.get("unused_teachers_differ", [])) | set(unused_differ(rows, old, ensemble)))
            if unused:  # may differ from the teachers this row trained beside
                r["unused_teachers_differ"] = unused
            rows.append(r)
        if dropped:
            print(f"{dataset} seed {seed}: the run's ensemble or its distilled teachers differ from the record's; "
                  f"dropping the rows added on the old ones: {', '.join(r['name'] for r in dropped)}", flush=True)
    record = {"dataset": dataset, "seed": seed, **extra, "date": meta.get("date"), "machine": meta.get("machine"),
              **({"recbole_hetcomp": meta["recbole_hetcomp"]} if "recbole_hetcomp" in meta else {}), "rows": rows}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def teacher_tests(rows):
    return {r["name"]: r["test"] for r in rows if r["kind"] == "teacher"}


def distilled(rows, ensemble=None):
    """What the students of a run's ``rows`` distilled: the fusion of the ensemble they learnt (``ensemble``, a
    :func:`row_key`; by default :func:`learnt_ensemble`) as its kind, parameter and weights, and the test metrics of
    each teacher it weighs above 0. Where that ensemble row has no fusion (records from before the fit), every
    teacher's metrics. A teacher of weight 0 never reaches a student (``train_student`` hands it the fusion's active
    teachers only), so runs with equal ones trained their students on one target even where such a teacher trained
    to other metrics."""
    tests = teacher_tests(rows)
    key = ensemble or learnt_ensemble(rows)
    fusion = next((r for r in rows if row_key(r) == key), {}).get("fusion")
    if fusion is None:
        return tests
    weights = {t: float(w) for t, w in fusion["weights"].items()}
    return {**{t: tests.get(t) for t, w in weights.items() if w > 0},
            "fusion": {"kind": fusion["kind"], "param": float(fusion["param"]), "weights": weights}}


def target_differs(rows, reference, ensemble=None):
    """What makes the students of ``rows`` distil another target than those of ``reference`` (of the ensemble
    ``ensemble``, as in :func:`distilled`): ``"fusion"`` where the fusions differ, and the teachers either one
    distilled whose test metrics differ; sorted, empty when the target is the same. Where either side has no fusion
    (a record from before the fit), every teacher counts."""
    a, b = distilled(rows, ensemble), distilled(reference, ensemble)
    tests_a, tests_b = teacher_tests(rows), teacher_tests(reference)
    if "fusion" not in a or "fusion" not in b:
        return sorted(t for t in tests_a.keys() | tests_b.keys() if tests_a.get(t) != tests_b.get(t))
    used = (a.keys() | b.keys()) - {"fusion"}
    return sorted({t for t in used if tests_a.get(t) != tests_b.get(t)}
                  | ({"fusion"} if a["fusion"] != b["fusion"] else set()))


def unused_differ(rows, reference, ensemble=None):
    """The teachers whose test metrics differ between ``rows`` and ``reference`` but which neither run's students
    distilled (weight 0 in both fusions): they change the equal-weight ensemble's row (and could change the fit,
    which :func:`target_differs` compares), not what a student learns."""
    a, b = teacher_tests(rows), teacher_tests(reference)
    differ = target_differs(rows, reference, ensemble)
    return sorted(t for t in a.keys() | b.keys() if a.get(t) != b.get(t) and t not in differ)


def add_ablations(dataset, seed, citeulike, kind="ablation", methods=None):
    """Train the ablation rows (``kind="kd baseline"``: the KD baselines' rows) a recorded run lacks, one student
    at a time, each merged into the record as soon as it finishes (a stopped session keeps the rows it finished).
    The teachers come from the store, or are retrained, and the rows must distil what the recorded student did: the
    fusion chosen now must be the record's, and each teacher it weighs above 0 must match the record's test metrics
    exactly (:func:`target_differs`); a teacher of weight 0 may differ, and each added row names it."""
    from recbole.utils import init_logger

    from recbole_hetcomp.config import make_config, scoped_args
    from recbole_hetcomp.run.fusion import choose_fusion
    from recbole_hetcomp.run.pipeline import ABLATIONS, KD_BASELINES, build_teachers, train_student
    from recbole_hetcomp.run.training import load_data
    from recbole_hetcomp.trajectories.store import TrajectoryStore

    path = RECORDS / dataset / f"seed-{seed}.json"
    if not path.exists():
        raise SystemExit(f"no recorded run of {dataset} seed {seed} ({path}): run it first, without --add-ablations")
    record = json.loads(path.read_text())
    variants = ABLATIONS
    if kind == "kd baseline":
        variants = KD_BASELINES
        if methods is not None:  # --kd-methods: only these, our readings included
            variants = [(label, over) for label, over in kd_rows() if over["kd_method"] in methods]
    # the rows learn the ensemble the recorded student learnt: the fitted one, or (older records) equal weights; a
    # row of the same name that learnt the other one (kept from before a re-run) is another row (:func:`row_key`)
    learnt = next(r for r in record["rows"] if r["kind"] == "student").get("ensemble", "equal weights")
    present = {row_key(r) for r in record["rows"]}
    missing = [(label, over) for label, over in variants
               if row_key({"kind": kind, "name": label, "ensemble": learnt}) not in present]
    if not missing:
        return
    teachers, config, scoped = pipeline_settings(dataset, seed, citeulike)
    base = make_config("HetCompEnsemble", dataset, None, config, [])
    init_logger(base)
    teachers = list(teachers or base["teachers"])
    rows, trajectories = build_teachers(dataset, teachers, None, config, scoped)
    fit_config = make_config("HetCompEnsemble", dataset, None,
                             {**config, "ensemble_fit": learnt == "fitted on validation"}, [])
    fusion = choose_fusion(fit_config, load_data(fit_config), trajectories, TrajectoryStore(base["trajectory_store"]))
    recorded = teacher_tests(record["rows"])
    if set(recorded) != set(teachers):
        raise SystemExit(f"{dataset} seed {seed}: the record's teachers are {sorted(recorded)}, this script's "
                         f"{sorted(teachers)}: rerun the whole seed instead")
    # what the added rows distil, as distilled() reads a record: these teachers and the fusion chosen now
    f, key = fusion.fusion, FITTED if learnt == "fitted on validation" else EQUAL
    now = [*rows, {"name": key, "kind": "ensemble", "fusion": f.as_row()}]
    differ = target_differs(now, record["rows"], key)
    if "fusion" in differ:
        raise SystemExit(
            f"{dataset} seed {seed}: the ensemble is now fitted as {f.describe()}, the record's student learnt "
            f"another fusion; rows added now would not compare with the recorded student: rerun the whole seed instead")
    if differ:
        name = differ[0]
        raise SystemExit(
            f"{dataset} seed {seed}: teacher {name} now tests {teacher_tests(now)[name]}, the record says "
            f"{recorded[name]} (another CPU's kernels? see docs/determinism.md); ablations on these teachers would "
            f"not compare with the recorded student: rerun the whole seed instead")
    unused = unused_differ(now, record["rows"], key)
    if unused:
        print(f"{dataset} seed {seed}: {', '.join(unused)} now test(s) otherwise than the record says, but weigh 0 in "
              f"the ensemble the students learn, so the added rows distil what the recorded student did", flush=True)
    hetcomp_args = scoped_args(scoped, "HetComp", ["HetComp", *teachers])
    run_dir(dataset, seed).mkdir(parents=True, exist_ok=True)
    for label, over in missing:
        print(f"== {dataset} seed {seed}: {label}", flush=True)
        with tempfile.TemporaryDirectory(prefix="ablation-", dir=run_dir(dataset, seed)) as workdir:
            row, _ = train_student(dataset, trajectories, Path(workdir), None, {**config, **over}, hetcomp_args,
                                   fusion=fusion)
        row.update(name=label, kind=kind, added=f"{date.today().isoformat()}, {machine()}", recbole_hetcomp=__version__)
        if unused:  # said in the row: its run's equal-weight ensemble would not be the record's
            row["unused_teachers_differ"] = unused
        record["rows"].append(row)
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")


KIND_ORDER = ("teacher", "ensemble", "student", "ablation", "kd baseline", "baseline")


def row_key(row):
    """Rows are matched across seeds by name; the ensemble's name lists its teachers."""
    if row["kind"] == "ensemble" and not row["name"].startswith("Ensemble ("):
        return EQUAL  # records from before the fitted ensemble named it after its teachers
    if row["kind"] in ("student", "ablation") and row.get("ensemble", "equal weights") == "equal weights":
        return row["name"] + OLD_TARGET  # a student of the equal-weight ensemble is another row than one of the fit
    return row["name"]


EQUAL, FITTED = "Ensemble (equal weights)", "Ensemble (fitted on validation)"
STUDENT, OLD_TARGET = "HetComp", " (learns equal weights)"


def learnt_ensemble(rows):
    """Key of the ensemble row the run's student learnt (the fitted one where the run has it)."""
    keys = {row_key(r) for r in rows}
    return FITTED if FITTED in keys else EQUAL


def recorded_runs(dataset):
    """{seed: record} of every recorded run of ``dataset``."""
    records = (json.loads(p.read_text()) for p in sorted((RECORDS / dataset).glob("seed-*.json")))
    return {r["seed"]: r for r in records}


def aggregate(dataset):
    records = recorded_runs(dataset)
    if not records:
        return None
    runs = {seed: r["rows"] for seed, r in records.items()}
    names, kinds, params, values, seeds = [], {}, {}, {}, {}
    for seed, rows in runs.items():
        for r in rows:
            key = row_key(r)
            if key not in kinds:
                names.append(key)
                kinds[key], params[key] = r["kind"], r.get("params", 0)
            seeds.setdefault(key, []).append(seed)
            for m in METRIC_COLUMNS:
                if m in r.get("test", {}):
                    values.setdefault(key, {}).setdefault(m, []).append(r["test"][m])
    names.sort(key=lambda k: KIND_ORDER.index(kinds[k]) if kinds[k] in KIND_ORDER else len(KIND_ORDER))
    table = []
    for key in names:
        stats = {}
        for m, xs in values.get(key, {}).items():
            stats[m] = {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None,
                        "n": len(xs), "values": xs}
        table.append({"name": key, "kind": kinds[key], "params": params[key], "seeds": sorted(seeds[key]),
                      "test": stats})
    where = sorted({f"{r['date'] or 'undated'}, {r['machine'] or 'unrecorded machine'}" for r in records.values()}
                   | {row["added"] for rows in runs.values() for row in rows if row.get("added")})
    unused = {}  # rows added beside teachers of weight 0 that retrained to other metrics (add_ablations)
    for seed, rows in sorted(runs.items()):
        for r in rows:
            if r.get("unused_teachers_differ"):
                unused.setdefault((seed, tuple(r["unused_teachers_differ"])), []).append(r["name"])
    return {"dataset": dataset, "seeds": sorted(runs), "rows": table, "targets": targets(table),
            "kd_comparison": kd_comparison(table), "runs_on": where,
            "unused_teachers_differ": [{"seed": s, "teachers": list(t), "rows": names}
                                       for (s, t), names in unused.items()]}


def kd_comparison(table, metric="recall@20"):
    """HetComp against the KD baselines and the same student without KD: each method's mean and std of test
    ``metric`` over HetComp's seeds, the winner, and its lead over the runner-up against the spread (the larger of
    the two stds) and seed by seed. A method recorded on fewer of HetComp's seeds (added later, on the machines
    that can still run them) is not mixed in: it is in ``partial``, set against HetComp on its own seeds. None
    when no KD baseline row exists."""
    methods = [r for r in table if r["kind"] == "kd baseline" or r["name"] == STUDENT
               or (r["kind"] == "baseline" and r["name"].startswith("MF w/o KD"))]
    if not any(r["kind"] == "kd baseline" for r in methods):
        return None
    per_seed = {r["name"]: dict(zip(r["seeds"], r["test"][metric]["values"])) for r in methods if metric in r["test"]}
    if STUDENT not in per_seed:
        return None
    hetcomp = per_seed[STUDENT]
    core = {n: v for n, v in per_seed.items() if set(hetcomp) <= set(v)}
    seeds = sorted(hetcomp)
    rows = []
    for name, values in core.items():
        xs = [values[s] for s in seeds]
        rows.append({"name": name, "mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None})
    rows.sort(key=lambda r: -r["mean"])
    first, second = rows[0], rows[1] if len(rows) > 1 else rows[0]
    spread = max((r["std"] for r in (first, second) if r["std"] is not None), default=None)
    # seed by seed: both methods learnt the same teachers on the same split, so the per-seed lead is the paired
    # comparison (the std of the means is mostly the splits' own spread)
    leads = [per_seed[first["name"]][s] - per_seed[second["name"]][s] for s in seeds]
    partial = []
    for name, values in per_seed.items():
        common = sorted(set(values) & set(hetcomp))
        if name in core or not common:
            continue
        diffs = [hetcomp[s] - values[s] for s in common]
        partial.append({"name": name, "seeds": common, "mean": statistics.fmean(values[s] for s in common),
                        "hetcomp_mean": statistics.fmean(hetcomp[s] for s in common),
                        "hetcomp_leads": diffs, "hetcomp_ahead_in": sum(x > 0 for x in diffs)})
    partial.sort(key=lambda r: -r["mean"])
    return {"metric": metric, "seeds": seeds, "methods": rows, "winner": first["name"],
            "lead": first["mean"] - second["mean"], "runner_up": second["name"], "spread": spread,
            "lead_exceeds_spread": None if spread is None else first["mean"] - second["mean"] > spread,
            "seed_leads": leads, "ahead_in": sum(x > 0 for x in leads),
            "seed_lead_std": statistics.stdev(leads) if len(leads) > 1 else None, "partial": partial}


def targets(table):
    """The issue's targets on test Recall@20. Each ratio is the mean over the seeds that have both of its rows
    (a seed's best teacher is its own best on test Recall@20), so rows of other code or other seeds never mix."""
    per_seed = {r["name"]: dict(zip(r["seeds"], r["test"]["recall@20"]["values"]))
                for r in table if "recall@20" in r["test"]}
    teachers = [r["name"] for r in table if r["kind"] == "teacher" and r["name"] in per_seed]
    seeds = sorted({s for t in teachers for s in per_seed[t]})
    per_seed["best teacher"] = {s: max(per_seed[t][s] for t in teachers if s in per_seed[t]) for s in seeds}

    def ratio(a, b):
        common = sorted(set(per_seed.get(a, {})) & set(per_seed.get(b, {})))
        return (statistics.fmean(per_seed[a][s] / per_seed[b][s] for s in common), common) if common else (None, [])

    student = STUDENT if STUDENT in per_seed else f"{STUDENT}{OLD_TARGET}"
    learns = FITTED if student == STUDENT else EQUAL
    mf = next((r["name"] for r in table if r["kind"] == "baseline"), None)
    out = {"student": student, "student_learns": learns}
    for key, (a, b), target in (("student_vs_ensemble", (student, learns), 0.97),
                                ("student_vs_best_teacher", (student, "best teacher"), 1.0),
                                ("student_vs_mf", (student, mf), 1.10),
                                ("fitted_vs_best_teacher", (FITTED, "best teacher"), 1.02)):
        value, common = ratio(a, b)
        if value is not None:
            out[key] = {"ratio": value, "target": target, "met": value >= target, "seeds": common}
    return out


def mean_std(stat):
    """``mean ± std``, or the mean alone where one seed gives no std."""
    return f"{stat['mean']:.4f}" if stat["std"] is None else f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def markdown(result):
    cols = METRIC_COLUMNS
    lines = [f"## {result['dataset']} (seeds {', '.join(map(str, result['seeds']))}; test metrics, mean ± std)", "",
             f"Runs: {'; '.join(result.get('runs_on') or ['unrecorded'])}.", ""]
    for x in result.get("unused_teachers_differ", []):
        lines += [f"Seed {x['seed']}: {', '.join(x['rows'])} trained beside {', '.join(x['teachers'])} retrained to "
                  f"other test metrics than this record's, of weight 0 in the fit: they distil the record's target "
                  f"(benchmarks/README.md).", ""]
    lines += ["| name | kind | params | " + " | ".join(cols) + " |", "|" + "---|" * (3 + len(cols))]
    for r in result["rows"]:
        cells = [mean_std(r["test"][c]) if c in r["test"] else "-" for c in cols]
        partial = r["seeds"] != result["seeds"]
        name = f"{r['name']} ({seeds_phrase(r['seeds'])} only)" if partial else r["name"]
        lines.append(f"| {name} | {r['kind']} | {r['params']:,} | " + " | ".join(cells) + " |")
    t = result["targets"]
    names = {"student_vs_ensemble": f"{t.get('student')} / {t.get('student_learns')}",
             "student_vs_best_teacher": f"{t.get('student')} / best single teacher",
             "student_vs_mf": f"{t.get('student')} / MF w/o KD",
             "fitted_vs_best_teacher": f"{FITTED} / best single teacher"}
    shown = [k for k in ("fitted_vs_best_teacher", "student_vs_ensemble", "student_vs_best_teacher", "student_vs_mf")
             if k in t]
    if shown:
        lines.append("")
        lines.append("Targets, test Recall@20, each the mean of its per-seed ratios over the seeds that have both rows:")
        lines.append("")
    for key in shown:
        x = t[key]
        lines.append(f"- {names[key]}: {x['ratio']:.3f} (target >= {x['target']:.2f}: {'met' if x['met'] else 'not met'}; "
                     f"seeds {', '.join(map(str, x['seeds']))})")
    if result.get("kd_comparison"):
        lines += ["", *kd_markdown(result["kd_comparison"], "same d = 6 student and ensemble")]
    return "\n".join(lines)


def seeds_phrase(seeds):
    """``'seed 2022'`` or ``'seeds 2020, 2022'``."""
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def kd_markdown(kd, what):
    """Markdown lines of a :func:`kd_comparison`: each method's mean and std, the winner and its lead (against the
    spread and seed by seed), and the methods recorded on fewer seeds; ``what`` says what the methods share."""
    n = len(kd["seeds"])
    lines = [f"Distillation methods, {what} (test {kd['metric'].capitalize()}, "
              f"{'mean ± std over seeds' if n > 1 else 'seed'} {', '.join(map(str, kd['seeds']))}):", ""]
    lines += [f"- {r['name']}: {r['mean']:.4f}" + ("" if r["std"] is None else f" ± {r['std']:.4f}")
              for r in kd["methods"]]
    verdict = ("one seed: no spread to weigh the lead against" if kd["spread"] is None else
               f"{'more' if kd['lead_exceeds_spread'] else 'less'} than the larger std, {kd['spread']:.4f}")
    if round(kd["lead"], 4) == 0:  # the means agree to the 4 decimals shown: no winner to name
        spread = "" if kd["spread"] is None else f" (std {kd['spread']:.4f})"
        lines += ["", f"No winner: {kd['winner']} and {kd['runner_up']} tie at {kd['methods'][0]['mean']:.4f}{spread}."]
    else:
        lines += ["", f"Winner: {kd['winner']}, ahead of {kd['runner_up']} by {kd['lead']:.4f} ({verdict})."]
    if n > 1:
        lines += ["", f"Seed by seed (same teachers and split): ahead in {kd['ahead_in']} of {n}, by "
                      f"{kd['lead']:.4f} ± {kd['seed_lead_std']:.4f} ("
                      + ", ".join(f"{s}: {x:+.4f}" for s, x in zip(kd["seeds"], kd["seed_leads"])) + ")."]
    for r in kd.get("partial", []):
        where = seeds_phrase(r["seeds"])
        lines += ["", f"{r['name']}, recorded on {where} only: {r['mean']:.4f} against HetComp's "
                      f"{r['hetcomp_mean']:.4f} on the same {where}; HetComp ahead in {r['hetcomp_ahead_in']} "
                      f"of {len(r['seeds'])} (" + ", ".join(f"{s}: {x:+.4f}" for s, x in
                                                             zip(r["seeds"], r["hetcomp_leads"])) + ")."]
    return lines


def seed_arguments(description):
    """The options every script over the accuracy runs' seeds takes: datasets, seeds, CiteULike-t's file,
    torch threads, and aggregating the records only."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--datasets", default="ml-100k,citeulike-t")
    p.add_argument("--seeds", default="2020,2021,2022")
    p.add_argument("--citeulike", default=str(CITEULIKE), help="path of CiteULike-t's users.dat")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--only-aggregate", action="store_true", help="do not run, aggregate the records only")
    return p


def main():
    p = seed_arguments(__doc__.split("\n")[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--no-ablations", action="store_true",
                       help="skip HetComp w/o DKC and w/o AKT (saves 2 student runs)")
    which.add_argument("--add-ablations", action="store_true",
                       help="train the ablation rows that recorded runs lack, one at a time, each recorded when it ends")
    which.add_argument("--add-kd-baselines", action="store_true",
                       help="train the KD baselines' rows (RD, RRD, DCD, CL-DRD) that recorded runs lack, likewise")
    which.add_argument("--teachers-only", nargs="?", const="", default=None, metavar="NAMES",
                       help="train only the teachers NAMES (comma-separated; default: all the run's) of each seed "
                            "into the store, and record nothing: one process per share of them fills the store "
                            "in parallel")
    p.add_argument("--kd-baselines", action="store_true", help="new runs also train the KD baselines' rows")
    p.add_argument("--kd-methods", default=None,
                   help="with --add-kd-baselines: only these kd_method values, e.g. cldrd,rrd (default: the "
                        "four baselines), or our readings dcd_overview, cldrd_group")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    datasets = [d for d in args.datasets.split(",") if d]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    adding = "ablation" if args.add_ablations else "kd baseline" if args.add_kd_baselines else None
    methods = None if args.kd_methods is None else [m for m in args.kd_methods.split(",") if m]
    known = ("rd", "rrd", "dcd", "cldrd", *READINGS)  # the kd_method of each of the pipeline's KD_BASELINES, our readings
    if methods is not None and (not args.add_kd_baselines or not set(methods) <= set(known) or not methods):
        p.error(f"--kd-methods goes with --add-kd-baselines and names some of {', '.join(known)}")
    if (adding or args.teachers_only is not None) and args.only_aggregate:
        p.error("--add-ablations, --add-kd-baselines and --teachers-only train; drop --only-aggregate")
    if args.teachers_only is not None:
        names = [n for n in args.teachers_only.split(",") if n] or None
        try:  # every dataset's names checked before anything trains
            plan = {dataset: check_teachers(dataset, names) for dataset in datasets}
        except ValueError as e:
            p.error(str(e))
        for dataset, teachers in plan.items():
            for seed in seeds:
                print(f"== {dataset} seed {seed}: teachers {', '.join(teachers)}", flush=True)
                train_teachers(dataset, seed, args.citeulike, teachers)
        return
    if not args.only_aggregate and not adding:
        for dataset in datasets:
            for seed in seeds:
                if not (run_dir(dataset, seed) / "results.json").exists():
                    print(f"== {dataset} seed {seed}", flush=True)
                    run_one(dataset, seed, args.citeulike, ablations=not args.no_ablations,
                            kd_baselines=args.kd_baselines)
    for run in sorted(RUNS.glob("*/seed-*")):  # finished runs of this call and of earlier ones
        if run.name[len("seed-"):].isdigit() and (run / "results.json").exists():
            record_run(run, run.parent.name, int(run.name[len("seed-"):]))
    if adding:  # after the records above, so a finished but unrecorded run counts
        for dataset in datasets:
            for seed in seeds:
                add_ablations(dataset, seed, args.citeulike, kind=adding, methods=methods)
    # every dataset with a recorded run, not only those of this call
    everything = sorted(p.name for p in RECORDS.iterdir() if p.is_dir()) if RECORDS.is_dir() else []
    results = [r for r in (aggregate(d) for d in everything) if r]
    out = {"benchmark": "accuracy", "aggregated": date.today().isoformat(),
           "versions": library_versions(), "results": results}
    atomic_write_text(RESULTS / "accuracy.json", json.dumps(out, indent=1) + "\n")
    text = ["# Accuracy over seeds", "", "Each (dataset, seed) is one `run_pipeline(..., ablations=True)` (or without "
            "the ablation rows, where run with --no-ablations, and then with those rows trained later on the same "
            "teachers by --add-ablations); see benchmarks/README.md.", ""]
    text += [markdown(r) + "\n" for r in results]
    atomic_write_text(RESULTS / "accuracy.md", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
