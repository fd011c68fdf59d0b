"""Regenerate docs/errors.md: every bad input tried on the command line and the exact line it prints.

    python docs/make_errors.py            # about a minute; writes docs/errors.md
    python docs/make_errors.py --check    # the same runs; exit 1 with a diff if docs/errors.md is not current

Each case runs ``run_recbole_hetcomp.py`` in a fresh process, in the scratch directory
/tmp/hetcomp-errors (recreated), on the small synthetic dataset of the tests and broken
copies of it, with RecBole's default logging. The table keeps the exit status and stderr as
printed (its last line; earlier lines, such as a warning, are noted).
"""

import difflib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import STORE_DAMAGE, write_synth  # noqa: E402

W = Path("/tmp/hetcomp-errors")
CLI = [sys.executable, str(REPO / "run_recbole_hetcomp.py")]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
SYNTH = ["-d", "synth", "--data_path=data/"]
SMALL = ["--epochs=2", "--trajectory_top_n=30", "--hetcomp_k=20", "--hetcomp_p=5", "--dkc_k=10"]


def write(path, text):
    path = W / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fixtures():
    shutil.rmtree(W, ignore_errors=True)
    W.mkdir(parents=True)
    write_synth(W / "data")
    good = (W / "data" / "synth" / "synth.inter").read_text().splitlines()
    header, rows = good[0], good[1:]
    write("data/empty/empty.inter", "")
    write("data/headeronly/headeronly.inter", header + "\n")
    write("data/commas/commas.inter", "\n".join(line.replace("\t", ",") for line in good) + "\n")
    write("data/shortline/shortline.inter", "\n".join([header, *rows[:30], "u5\ti3", *rows[30:]]) + "\n")
    write("data/badfloat/badfloat.inter", "\n".join([header, *rows[:30], "u5\ti3\t4.0\tyesterday", *rows[30:]]) + "\n")
    write("data/noitem/noitem.inter", "\n".join([header.replace("item_id", "movie_id"), *rows]) + "\n")
    (W / "data" / "nointer").mkdir()
    write("data/single/single.inter", "\n".join([header] + [f"u{u}\ti{u % 50}\t1.0\t{u}.0" for u in range(60)]) + "\n")
    sparse = [header]
    for u in range(60):
        for k in range(2 if u % 2 else 15):
            sparse.append(f"u{u}\ti{(u * 7 + k * 11) % 80}\t1.0\t{u * 100 + k}.0")
    write("data/sparse/sparse.inter", "\n".join(sparse) + "\n")
    ratings = []
    for line in rows:
        u, i, r, t = line.split("\t")
        ratings.append(f"{u[1:]}::{i[1:]}::{int(float(r))}::{int(float(t))}")
    with zipfile.ZipFile(W / "ml-1m.zip", "w") as z:
        z.writestr("ml-1m/ratings.dat", "\n".join(ratings) + "\n")
    blob = (W / "ml-1m.zip").read_bytes()
    (W / "truncated.zip").write_bytes(blob[: len(blob) // 2])
    write("tabs.dat", "\n".join(r.replace("::", "\t") for r in ratings) + "\n")
    write("ids.dat", "\n".join(["u1::m2::3::978300760", *ratings]) + "\n")
    write("blank.dat", "")
    write("broken.yaml", "epochs: [1, 2\nlearning_rate: 0.1\n")
    write("typo.yaml", "epochs: 2\nlerning_rate: 0.1\n")
    write("list.yaml", "- epochs\n- 2\n")
    write("scoped.yaml", "BPR.lerning_rate: 0.1\n")
    write("noscope.yaml", "BRP.learning_rate: 0.1\n")
    write("fusion_space.yaml", "learning_rate: {choice: [0.01, 0.05]}\nensemble_tau: {choice: [5.0, 20.0]}\n")
    write("a_file", "not a directory")
    import random

    import torch

    (W / "garbage.pth").write_bytes(bytes(random.Random(1).getrandbits(8) for _ in range(2000)))
    torch.save({"config": None, "state_dict": {"w": torch.zeros(1000)}}, W / "truncated.pth")
    (W / "truncated.pth").write_bytes((W / "truncated.pth").read_bytes()[:600])
    torch.save({"weights": torch.zeros(3)}, W / "foreign.pth")


def run(args, **kw):
    return subprocess.run([*CLI, *args], cwd=W, capture_output=True, text=True, env=ENV, timeout=300, **kw)


CASES = [
    # (what is wrong, arguments)
    ("unknown --model", [*SYNTH, "--model", "BRP"]),
    ("unknown teacher", [*SYNTH, "--teachers", "BPR,LigthGCN"]),
    ("teacher that is not a general recommender", [*SYNTH, "--teachers", "BPR,SASRec"]),
    ("the student as a teacher", [*SYNTH, "--teachers", "BPR,HetComp"]),
    ("a student that cannot score the catalogue", [*SYNTH, "--teachers", "BPR", "--student", "NeuMF"]),
    ("a student fitted in one shot", [*SYNTH, "--teachers", "BPR", "--student", "EASE"]),
    ("a student that is no model", [*SYNTH, "--teachers", "BPR", "--student", "LightGNC"]),
    ("an unknown KD method", [*SYNTH, "--teachers", "BPR", "--HetComp.kd_method=distil"]),
    ("an unknown student batching", [*SYNTH, "--teachers", "BPR", "--HetComp.hetcomp_batch=all"]),
    ("a teacher listed twice", [*SYNTH, "--teachers", "BPR,bpr"]),
    ("K (hetcomp_k) larger than the catalogue", [*SYNTH, "--teachers", "BPR", "--trajectory_top_n=30",
                                                "--hetcomp_k=500"]),
    ("K larger than N (trajectory_top_n)", [*SYNTH, "--teachers", "BPR", "--trajectory_top_n=30", "--hetcomp_k=40"]),
    ("dkc_k larger than N", [*SYNTH, "--teachers", "BPR", "--trajectory_top_n=30", "--hetcomp_k=20", "--dkc_k=50"]),
    ("K not a number", [*SYNTH, "--teachers", "BPR", "--trajectory_top_n=30", "--hetcomp_k=many"]),
    ("N larger than the catalogue", [*SYNTH, "--teachers", "BPR", "--trajectory_top_n=500"]),
    ("milestones not increasing", [*SYNTH, "--teachers", "BPR", "--trajectory_milestones=[0.5,0.25,1.0]"]),
    ("milestones outside (0, 1]", [*SYNTH, "--teachers", "BPR", "--trajectory_milestones=[0.5,1.5]"]),
    ("milestones not ending at 1.0", [*SYNTH, "--teachers", "BPR", "--trajectory_milestones=[0.25,0.5]"]),
    ("milestones not a list", [*SYNTH, "--teachers", "BPR", "--trajectory_milestones=abc"]),
    ("a teacher on another split", [*SYNTH, "--teachers", "BPR,EASE", *SMALL, "--BPR.seed=3"]),
    ("teachers' lists of two lengths", [*SYNTH, "--teachers", "BPR,EASE", *SMALL, "--EASE.trajectory_top_n=25"]),
    ("student milestones that a teacher does not record",
     [*SYNTH, "--teachers", "BPR", *SMALL, "--HetComp.trajectory_milestones=[0.3,1.0]"]),
    ("every teacher weighed 0", [*SYNTH, "--teachers", "BPR,EASE", *SMALL, "--teacher_weights={'BPR':0,'EASE':0}"]),
    ("unknown --key=value", [*SYNTH, "--teachers", "BPR", "--lerning_rate=0.1"]),
    ("unknown --Model.key=value", [*SYNTH, "--teachers", "BPR,LightGCN", "--LightGCN.n_layer=2"]),
    ("unknown key, baseline run", [*SYNTH, "--model", "BPR", "--embeding_size=4"]),
    ("--Model.key=value for no model of the run", [*SYNTH, "--teachers", "BPR", "--HetCom.dkc=False"]),
    ("a key given twice", [*SYNTH, "--teachers", "BPR", "--epochs=2", "--epochs=3"]),
    ("stray argument", [*SYNTH, "BPR"]),
    ("yaml that does not parse", [*SYNTH, "--teachers", "BPR", "--config_files", "broken.yaml"]),
    ("yaml file missing", [*SYNTH, "--teachers", "BPR", "--config_files", "nope.yaml"]),
    ("yaml that is not key: value", [*SYNTH, "--teachers", "BPR", "--config_files", "list.yaml"]),
    ("yaml with an unknown key", [*SYNTH, "--teachers", "BPR", "--config_files", "typo.yaml"]),
    ("yaml with an unknown <Model>.key", [*SYNTH, "--teachers", "BPR,EASE", "--config_files", "scoped.yaml"]),
    ("yaml <Model>.key for no model", [*SYNTH, "--teachers", "BPR", "--config_files", "noscope.yaml"]),
    ("dataset folder missing", ["-d", "nosuch", "--data_path=data/", "--teachers", "BPR"]),
    (".inter file missing", ["-d", "nointer", "--data_path=data/", "--teachers", "BPR"]),
    ("empty .inter", ["-d", "empty", "--data_path=data/", "--teachers", "BPR"]),
    (".inter with a header only", ["-d", "headeronly", "--data_path=data/", "--teachers", "BPR"]),
    (".inter with commas, not tabs", ["-d", "commas", "--data_path=data/", "--teachers", "BPR"]),
    (".inter line with a missing field", ["-d", "shortline", "--data_path=data/", "--teachers", "BPR"]),
    (".inter float column with text (loaded)", ["-d", "badfloat", "--data_path=data/", "--teachers", "BPR",
                                               '--load_col={"inter": ["user_id", "item_id", "timestamp"]}']),
    (".inter without the item column", ["-d", "noitem", "--data_path=data/", "--teachers", "BPR"]),
    ("no user has validation items", ["-d", "single", "--data_path=data/", "--teachers", "BPR"]),
    ("some users lack validation items (a warning; the run goes on)",
     ["-d", "sparse", "--data_path=data/", "--teachers", "BPR", "--no_student", "--epochs=1",
      "--trajectory_top_n=30"]),
    ("MovieLens: truncated zip", ["-d", "ml-1m", "--data_path=data/", "--archive", "truncated.zip", "--teachers", "BPR"]),
    ("MovieLens: tab-separated ratings.dat", ["-d", "ml-1m", "--data_path=data/", "--archive", "tabs.dat",
                                             "--teachers", "BPR"]),
    ("MovieLens: non-numeric user id", ["-d", "ml-1m", "--data_path=data/", "--archive", "ids.dat", "--teachers", "BPR"]),
    ("MovieLens: empty ratings file", ["-d", "ml-1m", "--data_path=data/", "--archive", "blank.dat", "--teachers", "BPR"]),
    ("MovieLens: --archive does not exist", ["-d", "ml-1m", "--data_path=data/", "--archive", "nope.zip",
                                            "--teachers", "BPR"]),
    ("MovieLens: nothing local, no download", ["-d", "ml-1m", "--data_path=data/", "--dataset_download=False",
                                              "--teachers", "BPR"]),
    ("output directory not writable", [*SYNTH, "--teachers", "BPR", "--output", "a_file/out"]),
    ("--export_topk without --load", [*SYNTH, "--export_topk", "5"]),
    ("--load of a missing model file", ["--load", "results/synth/HetComp.pth", "--export_topk", "5"]),
    ("--load of a file of random bytes", ["--load", "garbage.pth", "--export_topk", "5"]),
    ("--load of a truncated model file", ["--load", "truncated.pth", "--export_topk", "5"]),
    ("--load of a torch file that is not a model", ["--load", "foreign.pth", "--export_topk", "5"]),
    # values: type, range, membership, across keys (properties/ yaml comments and properties/schema.yaml)
    ("seed not a number", [*SYNTH, "--teachers", "BPR", "--seed=abc"]),
    ("student embedding size 0", [*SYNTH, "--teachers", "BPR", "--HetComp.embedding_size=0"]),
    ("negative learning rate", [*SYNTH, "--teachers", "BPR", "--learning_rate=-0.01"]),
    ("epochs 0", [*SYNTH, "--teachers", "BPR", "--epochs=0"]),
    ("batch size not an integer", [*SYNTH, "--teachers", "BPR", "--train_batch_size=1.5"]),
    ("dropout above 1", [*SYNTH, "--teachers", "BPR,NeuMF", "--dropout_prob=1.5"]),
    ("negative teacher weight", [*SYNTH, "--teachers", "BPR,EASE", "--teacher_weights={'BPR': -1}"]),
    ("unknown importance", [*SYNTH, "--teachers", "BPR", "--ensemble_importance=gauss"]),
    ("unknown fit method", [*SYNTH, "--teachers", "BPR", "--ensemble_fit_method=best"]),
    ("fit metric the fit cannot compute", [*SYNTH, "--teachers", "BPR", "--ensemble_fit_metric=MAP@10"]),
    ("importance parameter of a kind not in use", [*SYNTH, "--teachers", "BPR,EASE", "--ensemble_rrf_k=30"]),
    ("a fusion key scoped to the student", [*SYNTH, "--teachers", "BPR,EASE", "--HetComp.ensemble_tau=30"]),
    ("the student's model as a scope, also a teacher", [*SYNTH, "--teachers", "BPR,LightGCN", "--student", "LightGCN",
                                                        "--LightGCN.embedding_size=8"]),
    ("a fusion key searched while the fit is on", [*SYNTH, "--teachers", "BPR,EASE", "--tune", "--search_space",
                                                   "fusion_space.yaml"]),
    ("unknown metric", [*SYNTH, "--teachers", "BPR", "--metrics=['Recall','Foo']"]),
    ("valid_metric not computed", [*SYNTH, "--teachers", "BPR", "--valid_metric=MRR@10"]),
    ("valid_metric at a cut-off not computed", [*SYNTH, "--teachers", "BPR", "--valid_metric=Recall@30"]),
    ("a cut-off of 0", [*SYNTH, "--teachers", "BPR", "--topk=[10,0]"]),
    ("sampled evaluation", [*SYNTH, "--teachers", "BPR",
                            "--eval_args={'split': {'RS': [0.8, 0.1, 0.1]}, 'mode': 'uni100'}"]),
    ("zero negatives per positive", [*SYNTH, "--teachers", "BPR",
                                     "--train_neg_sample_args={'distribution': 'uniform', 'sample_num': 0}"]),
    ("--device=cuda without CUDA", [*SYNTH, "--teachers", "BPR", "--device=cuda"]),
    ("--gpu_id without CUDA", [*SYNTH, "--teachers", "BPR", "--gpu_id=1"]),
]

HEADER = """# Errors: what a bad input prints

Every row is a real run of `python run_recbole_hetcomp.py` with the arguments shown, in a
scratch directory holding the synthetic dataset of the tests (`data/synth/`, 60 users,
80 items) and broken copies of it; regenerate the table with `python docs/make_errors.py`.
RecBole's logging is left at its default (INFO). The last column is what the run printed on
stderr: its last line (a note counts any lines before it, such as RecBole's INFO lines or
our conversion message). Exit status 2 means bad input, 130 an interruption by Ctrl-C and
143 by SIGTERM; no case prints a traceback (`--debug` shows it). Every check runs before
the output directory is created and before any teacher trains, so a failed run leaves
no results, no store directory and no partial `.inter` behind.

"""

FOOTER = """
Store rows: the store of one BPR teacher is built with the command shown, damaged, and the
same command run again; each row ends with the exit status of the same command with
`--rebuild_teachers`, which retrains the teacher and replaces the store.
Interruption rows: BPR is stored and LightGCN is training when the signal arrives (the
earlier lines are RecBole's INFO log of the run); the same command run again re-uses BPR and
retrains LightGCN. A SIGKILL prints nothing and leaves LightGCN's temporary directory, which
the next run removes ([interruptions.md](interruptions.md)).
"""

STORE = [*SYNTH, "--teachers", "BPR", "--no_student", *SMALL]


DAMAGE = [(label, STORE_DAMAGE[name]) for label, name in [
    ("store: truncated top.npy", "truncated top.npy"),
    ("store: one byte of top.npy changed", "tampered top.npy"),
    ("store: obs_items.npy missing", "missing obs_items.npy"),
    ("store: truncated meta.json", "truncated meta.json"),
    ("store: built on another split", "another split"),
    ("store: of another dataset", "another dataset"),
    ("store: older format version", "old format version"),
]]


LOG_TIME = re.compile(r"^\d\d [A-Z][a-z]{2} \d\d:\d\d\s+")


def cell(text):
    return "`" + text.replace("|", "\\|") + "`" if text else ""


def row(what, args, proc, note=""):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    warned = [line for line in lines if " WARNING " in line]
    if proc.returncode == 0 and warned:  # a run that goes on: show its warning
        lines = lines[: lines.index(warned[0]) + 1]
    last = LOG_TIME.sub("", lines[-1]) if lines else ""  # RecBole's log time would change the table every run
    if len(lines) > 1:
        note = (note + " " if note else "") + f"(after {len(lines) - 1} earlier line{'s' if len(lines) > 2 else ''})"
    if "Traceback" in proc.stderr:
        note += " TRACEBACK"
    return f"| {what} | {cell(shlex.join(args))} | {proc.returncode} | {cell(last)} {note} |"


def interrupt(sig):
    """Start BPR then LightGCN; send ``sig`` while LightGCN trains; return (args, process result)."""
    store = W / "istore"
    shutil.rmtree(store, ignore_errors=True)
    args = [*SYNTH, "--teachers", "BPR,LightGCN", "--trajectory_store=istore", "--output", "iout", "--epochs=3",
            "--LightGCN.epochs=300", "--LightGCN.stopping_step=1000", "--trajectory_top_n=30", "--hetcomp_k=20",
            "--hetcomp_p=5", "--dkc_k=10", "--show_progress=False"]
    with open(W / "stderr.txt", "w") as err:
        proc = subprocess.Popen([*CLI, *args], cwd=W, stdout=subprocess.DEVNULL, stderr=err, env=ENV,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while proc.poll() is None:
        if list(store.glob("*/BPR-*/meta.json")) and list(store.glob("*/.train-LightGCN-*")):
            proc.send_signal(sig)
            break
        time.sleep(0.005)
    proc.wait()
    return args, subprocess.CompletedProcess(proc.args, proc.returncode, "", (W / "stderr.txt").read_text())


def show(line):
    if "--check" not in sys.argv[1:]:  # a check prints only its verdict
        print(line, flush=True)


def main():
    fixtures()
    table = ["| bad input | command (`python run_recbole_hetcomp.py` ...) | exit | stderr |", "|---|---|---|---|"]
    for what, args in CASES:
        table.append(row(what, args, run(args)))
        show(table[-1])
        shutil.rmtree(W / "data" / "ml-1m", ignore_errors=True)
    assert run(STORE).returncode == 0
    (folder,) = (W / "trajectories" / "synth").glob("BPR-*")
    pristine = W / "pristine"
    shutil.copytree(folder, pristine)
    for what, spoil in DAMAGE:
        shutil.rmtree(folder)
        shutil.copytree(pristine, folder)
        spoil(folder)
        table.append(row(what, STORE, run(STORE)))
        rebuilt = run([*STORE, "--rebuild_teachers"])
        table[-1] = table[-1][:-2] + f"; with `--rebuild_teachers`: exit {rebuilt.returncode} |"
        show(table[-1])
    for what, sig in (("Ctrl-C (SIGINT) while the second teacher trains", signal.SIGINT),
                      ("SIGTERM while the second teacher trains", signal.SIGTERM)):
        args, proc = interrupt(sig)
        table.append(row(what, args, proc))
        show(table[-1])
    return HEADER + "\n".join(table) + "\n" + FOOTER


def comparable(text):
    """The page without what may differ between two correct runs: how many of RecBole's INFO lines an
    interrupted run printed before the signal arrived, and where in a truncated meta.json (whose length
    depends on the machine's library versions and CPU) the JSON parser stopped, and what it said there."""
    text = re.sub(r"\(after \d+ earlier lines?\)", "(after N earlier lines)", text)
    text = re.sub(r"line \d+ column \d+ \(char \d+\)", "line L column C (char N)", text)
    return re.sub(r"is unreadable \(.*?: line L", "is unreadable (<JSON parser's message>: line L", text).splitlines()


if __name__ == "__main__":
    page = Path(__file__).with_name("errors.md")
    text = main()
    if "--check" in sys.argv[1:]:
        diff = list(difflib.unified_diff(comparable(page.read_text()), comparable(text), "docs/errors.md",
                                         "regenerated", lineterm=""))
        if diff:
            print("docs/errors.md is not current: run python docs/make_errors.py\n" + "\n".join(diff))
            sys.exit(1)
        print("docs/errors.md is current")
    else:
        page.write_text(text)
