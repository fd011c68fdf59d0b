"""recbole-hetcomp command line: teachers, their ensemble, the HetComp student and the MF baseline.

    python run_recbole_hetcomp.py                              # ml-100k, default teachers
    python run_recbole_hetcomp.py -d ml-100k --teachers BPR,EASE --epochs=50
    python run_recbole_hetcomp.py --config_files my.yaml --learning_rate=0.002

Any ``--key=value`` not listed below goes to RecBole's Config.
"""

import argparse
import sys


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="Extra --key=value arguments are handed to RecBole's Config.")
    p.add_argument("-d", "--dataset", default="ml-100k", help="RecBole dataset name (default: ml-100k, embedded)")
    p.add_argument("--config_files", default=None, help="space- or comma-separated yaml config files")
    p.add_argument("--teachers", default=None, help="comma-separated teacher models (default: properties/overall.yaml)")
    p.add_argument("--output", default=None, help="directory for results.json / results.md (default: results/<dataset>)")
    p.add_argument("--rebuild_teachers", action="store_true", help="retrain teachers even if stored")
    p.add_argument("--no_student", action="store_true", help="stop after the teachers and their ensemble")
    p.add_argument("--ablations", action="store_true", help="also run HetComp without DKC and without AKT")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    args, rest = p.parse_known_args(argv)
    bad = [a for a in rest if not (a.startswith("--") and "=" in a)]
    if bad:
        p.error(f"unrecognised argument(s) {' '.join(bad)}: config overrides are written --key=value")
    return args, rest


def split_list(value):
    if not value:
        return None
    return [v for v in value.replace(",", " ").split() if v]


def main(argv=None):
    args, cmd_args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from recbole_hetcomp.pipeline import run_pipeline

        _, table = run_pipeline(args.dataset, teachers=split_list(args.teachers),
                                config_files=split_list(args.config_files), cmd_args=cmd_args,
                                output=args.output, rebuild=args.rebuild_teachers,
                                student=not args.no_student, ablations=args.ablations)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
