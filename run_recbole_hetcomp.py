"""recbole-hetcomp command line: teachers, their ensemble, the HetComp student and the MF baseline.

    python run_recbole_hetcomp.py                                   # ml-100k, default teachers
    python run_recbole_hetcomp.py -d ml-100k --teachers BPR,EASE --epochs=50
    python run_recbole_hetcomp.py --model LightGCN                   # one RecBole baseline, same split
    python run_recbole_hetcomp.py --load results/ml-100k/HetComp.pth --export_topk 20 --users 1,2,3
    python run_recbole_hetcomp.py --tune --num_samples 4                # Ray Tune search of HetComp (ASHA)
    python run_recbole_hetcomp.py --model BPR --tune                   # ... or of a baseline, same protocol

Any ``--key=value`` not listed below goes to RecBole's Config (``--<Model>.key=value`` to one model).
"""

import argparse
import builtins
import os
import re
import signal
import sys
import warnings
from pathlib import Path

# Warnings that third-party code prints on every run and that no user can act on, by category and the module
# that warns: pandas' chained-assignment FutureWarning in RecBole's dataset build (four lines a build),
# torch's GradScaler FutureWarning in RecBole's trainer, torch's sparse-constructor UserWarning in RecBole's
# LightGCN, and setuptools' pkg_resources UserWarning when Ray is imported. Only this command line filters
# them (the library never does), in its own process and, through PYTHONWARNINGS, in the processes it starts
# (local Ray workers and Tune trials); --debug shows everything.
QUIET_WARNINGS = (
    ("FutureWarning", "recbole.data.dataset.dataset"),
    ("FutureWarning", "recbole.trainer.trainer"),
    ("UserWarning", "recbole.model.general_recommender.lightgcn"),
    ("UserWarning", "recbole_hetcomp.model.lightgcn"),  # torch: "Sparse CSR tensor support is in beta state"
    ("UserWarning", "ray._private.parameter"),
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one line (the usage itself is in --help)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv):
    p = OneLineParser(description=__doc__.split("\n")[0],
                      epilog="Extra --key=value arguments are handed to RecBole's Config; "
                             "--<Model>.key=value reaches only that model.")
    p.add_argument("-m", "--model", default="HetComp",
                   help="HetComp (default: teachers, ensemble, student, baseline) or any RecBole/plugin "
                        "model to train alone on the same split and protocol")
    p.add_argument("-d", "--dataset", default="ml-100k", help="RecBole dataset name (default: ml-100k, embedded)")
    p.add_argument("--config_files", default=None, help="space- or comma-separated yaml config files")
    p.add_argument("--archive", default=None, metavar="PATH",
                   help="MovieLens: a local GroupLens zip or ratings file to convert; CiteULike-t: its users.dat "
                        "(else found in data_path, or downloaded)")
    p.add_argument("--teachers", default=None, help="comma-separated teacher models (default: properties/overall.yaml)")
    p.add_argument("--output", default=None, help="directory for results and the saved student (default: results/<dataset>)")
    p.add_argument("--rebuild_teachers", action="store_true", help="retrain teachers even if stored")
    p.add_argument("--refit_ensemble", action="store_true",
                   help="fit the ensemble's fusion on validation again even if a fit of the same teachers is stored")
    p.add_argument("--no_student", action="store_true", help="stop after the teachers and their ensemble")
    p.add_argument("--ablations", action="store_true", help="also run HetComp without DKC and without AKT")
    p.add_argument("--student", default=None, metavar="MODEL",
                   help="the student's architecture: MF (default) or a RecBole general model such as LightGCN; "
                        "its settings are HetComp's (--HetComp.embedding_size=8)")
    p.add_argument("--kd_baselines", action="store_true",
                   help="also run the ranking-KD baselines RD, RRD, DCD and CL-DRD on the same student and ensemble")
    p.add_argument("--load", default=None, metavar="MODEL_FILE",
                   help="a saved model (e.g. results/<dataset>/HetComp.pth) to export recommendations from")
    p.add_argument("--export_topk", type=int, default=None, metavar="K",
                   help="with --load: write the top-K unseen items of each user to <output>/topk.csv")
    p.add_argument("--users", default=None,
                   help="with --export_topk: comma-separated user ids, or a file with one id per line")
    ray = p.add_argument_group("Ray Tune and Ray clusters")
    ray.add_argument("--tune", action="store_true",
                     help="search the hyper-parameters of --model (default HetComp) with Ray Tune")
    ray.add_argument("--search_space", default=None, metavar="FILE",
                     help="yaml search space (default: properties/hyper/<model>.yaml)")
    ray.add_argument("--num_samples", type=int, default=8, help="trials to sample (default: 8)")
    ray.add_argument("--scheduler", choices=("asha", "fifo"), default="asha",
                     help="asha stops bad trials early; fifo runs every trial to the end (default: asha)")
    ray.add_argument("--ray_address", default=None, metavar="ADDR",
                     help="join an existing Ray cluster (e.g. auto or ray://host:10001) instead of a local Ray")
    ray.add_argument("--parallel_teachers", action="store_true",
                     help="train the teachers as parallel Ray tasks (implied by --ray_address)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    args, rest = p.parse_known_args(argv)
    bad = [a for a in rest if not (a.startswith("--") and "=" in a)]
    if bad:
        p.error(f"unrecognised argument(s) {' '.join(bad)}: config overrides are written --key=value")
    if args.num_samples < 1:
        p.error(f"--num_samples must be at least 1, got {args.num_samples}")
    if args.search_space and not args.tune:
        p.error("--search_space goes with --tune")
    if (args.load is None) != (args.export_topk is None):
        p.error("--load and --export_topk go together: --load MODEL_FILE --export_topk K")
    return args, rest


def split_list(value):
    if not value:
        return None
    return [v for v in value.replace(",", " ").split() if v]


def read_users(value):
    if value is None:
        return None
    path = Path(value)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return split_list(value)


def export(args):
    from recbole_hetcomp.run.inference import export_topk_csv, load_data_and_model

    _, model, dataset, *_ = load_data_and_model(args.load)
    out = Path(args.output or Path(args.load).parent) / "topk.csv"
    export_topk_csv(out, model, dataset, args.export_topk, read_users(args.users))
    return f"wrote {out}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interruption so that temporary files are cleaned up the same way."""


def _terminate(signum, frame):
    raise Terminated()


def one_line(error):
    """An exception's message on one line (a KeyError's without its quotes)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(text).split()) or type(error).__name__


def interrupted_message():
    """What an interrupted run has kept: the teachers of its plan that are complete in the store."""
    from recbole_hetcomp.run import preflight

    plan = preflight.last_plan
    if plan is None or not plan.teachers:
        return "interrupted; run the same command again (teachers already in the store are re-used)"
    stored = plan.stored()
    names = f" ({', '.join(stored)})" if stored else ""
    verb = "is" if len(stored) == 1 else "are"
    return (f"interrupted: {len(stored)} of {len(plan.teachers)} teachers {verb} stored{names}; "
            "run the same command again to resume")


def teacher_runner(args):
    """Teachers as Ray tasks with --parallel_teachers or --ray_address, else None (one after another)."""
    if not (args.parallel_teachers or args.ray_address):
        return None
    from recbole_hetcomp.distributed.parallel import ray_teacher_runner

    return ray_teacher_runner(args.ray_address)


def main(argv=None):
    args, cmd_args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.archive:
        cmd_args = [*cmd_args, f"--dataset_archive={Path(args.archive).resolve()}"]
    if args.student:
        cmd_args = [*cmd_args, f"--HetComp.student={args.student}"]
    from recbole_hetcomp.run import preflight

    preflight.last_plan = None  # interrupted_message() reports this run's plan only
    try:
        if args.load:
            print(export(args))
            return 0
        from recbole_hetcomp.run import pipeline

        if args.tune:
            from recbole_hetcomp.distributed.tune import run_tune

            _, table = run_tune(args.model, args.dataset, space_file=args.search_space, num_samples=args.num_samples,
                                scheduler=args.scheduler, ray_address=args.ray_address,
                                config_files=split_list(args.config_files), cmd_args=cmd_args, output=args.output,
                                rebuild=args.rebuild_teachers, parallel_teachers=args.parallel_teachers,
                                teachers=split_list(args.teachers), refit_ensemble=args.refit_ensemble)
        elif args.model.lower() != "hetcomp":
            _, table = pipeline.run_baseline(args.model, args.dataset, config_files=split_list(args.config_files),
                                             cmd_args=cmd_args, output=args.output)
        else:
            _, table = pipeline.run_pipeline(args.dataset, teachers=split_list(args.teachers),
                                             config_files=split_list(args.config_files), cmd_args=cmd_args,
                                             output=args.output, rebuild=args.rebuild_teachers,
                                             student=not args.no_student, ablations=args.ablations,
                                             kd_baselines=args.kd_baselines, teacher_runner=teacher_runner(args),
                                             refit_ensemble=args.refit_ensemble)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: temporary files are gone, stores are complete
        if args.debug:
            raise
        print(interrupted_message(), file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        if args.debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug rather than bad input: still one line, the traceback with --debug
        if args.debug:
            raise
        print(f"error: unexpected {type(e).__name__}: {one_line(e)} (run again with --debug for the traceback, "
              "and report it)", file=sys.stderr)
        return 1
    print(table)
    return 0


def quiet_known_warnings():
    """Ignore :data:`QUIET_WARNINGS` here and in the processes this one starts."""
    for category, module in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", category=getattr(builtins, category), module=re.escape(module) + r"\Z")
    children = [f"ignore::{category}:{module}" for category, module in QUIET_WARNINGS]
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), *children]))


if __name__ == "__main__":
    if "--debug" not in sys.argv:
        quiet_known_warnings()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main())
