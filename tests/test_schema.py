"""The value schema (schema.py): every key's type and range, from the yaml, checked before anything trains;
the device; damaged model files; and a bounded fuzz of the command line's numeric keys."""

import random
import re
import time
from pathlib import Path

import pytest
import torch
import yaml

import run_recbole_hetcomp as cli
from recbole_hetcomp.schema import check_values, parse_spec, value_schema
from recbole_hetcomp.settings import our_keys, properties_dir

# ---------------------------------------------------------------------------- the notation


@pytest.mark.parametrize("text, good, bad, words", [
    ("int > 0", [1, 7], [0, -1, 1.5, True, "1", None], "an integer > 0"),
    ("int >= 0", [0, 3], [-1], "an integer >= 0"),
    ("float > 0", [0.5, 2, 1e-9], [0, -0.1, float("nan"), float("inf"), "0.5", False], "a number > 0"),
    ("float in [0, 1]", [0, 1, 0.3], [-0.01, 1.01], "a number in [0, 1]"),
    ("float in (0, 1]", [1, 0.5], [0], "a number in (0, 1]"),
    ("int > 1", [2], [1], "an integer > 1"),
    ("bool", [True, False], [0, 1, "True"], "True or False"),
    ("str: exp | rrf | power", ["exp", "rrf"], ["EXP", "gauss", 1], "one of exp, rrf, power"),
    ("list of int > 0", [[1, 2], [], (3,)], [[1, 0], 5, "[1]"], "a list of integers > 0"),
    ("dict of float >= 0 or None", [{"a": 0, "b": 2.5}, None], [{"a": -1}, [1]],
     "a mapping of names to numbers >= 0 or None (~ in yaml)"),
    ("int > 0 or list of int > 0", [5, [10, 20]], [0, [0]], "an integer > 0 or a list of integers > 0"),
])
def test_specs_accept_and_describe(text, good, bad, words):
    spec = parse_spec(text)
    assert [spec.accepts(v) for v in good] == [True] * len(good)
    assert [spec.accepts(v) for v in bad] == [False] * len(bad)
    assert spec.describe() == words


@pytest.mark.parametrize("text", ["integer > 0", "int >> 0", "float in [0 1]", "str | a"])
def test_a_bad_spec_is_named(text):
    with pytest.raises(ValueError, match=re.escape(f"bad type spec '({text})'")):
        parse_spec(text)


def test_every_key_of_our_yaml_has_a_spec_in_one_place():
    schema = value_schema()  # parses every comment; a key typed differently in two files raises
    assert our_keys() <= set(schema), sorted(our_keys() - set(schema))
    recbole_only = set(yaml.safe_load((properties_dir() / "schema.yaml").read_text()))
    assert not recbole_only & our_keys(), "a key's spec belongs to one file: " + ", ".join(recbole_only & our_keys())


@pytest.mark.parametrize("model", ["BPR", "CML", "NeuMF", "LightGCN", "MultiVAE", "EASE", "HetComp",
                                   "HetCompEnsemble", "Pop", "ItemKNN"])
def test_the_defaults_pass(synth_config, model):
    check_values(synth_config(model))


# ---------------------------------------------------------------------------- one test per class of value


@pytest.mark.parametrize("over, message", [
    ({"seed": "abc"}, "seed=abc: must be an integer >= 0"),                                   # type
    ({"embedding_size": 0}, "embedding_size=0: must be an integer > 0"),                      # range
    ({"learning_rate": -1}, "learning_rate=-1: must be a number > 0"),
    ({"dropout_prob": 1.5}, r"dropout_prob=1.5: must be a number in \[0, 1\]"),
    ({"ensemble_importance": "gauss"}, "ensemble_importance=gauss: must be one of exp, rrf, power"),  # membership
    ({"metrics": ["Recall", "Foo"]}, r"metrics=\['Recall', 'Foo'\]: must be a list of RecBole metrics \(auc, "),
    ({"valid_metric": "NDCG@30"}, r"valid_metric=NDCG@30: must be one of metrics \(Recall, NDCG\) at a cut-off "
                                  r"of topk \(10, 20, 50\), e.g. Recall@50"),                 # across keys
    ({"valid_metric": "MRR@10"}, "valid_metric=MRR@10: must be one of metrics"),
    ({"teacher_weights": {"BPR": -1.0}}, r"teacher_weights=\{'BPR': -1.0\}: must be a mapping of names to numbers"),
    ({"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "uni100"}},
     "must be a mapping whose mode is full"),
    ({"eval_args": {"split": {"XX": [1]}, "mode": "full"}}, r"must be a mapping whose split is \{RS"),
    ({"trajectory_milestones": [0.5, 1.5]}, r"trajectory_milestones=\[0.5, 1.5\]: must be a list of numbers in \(0, 1\]"),
])
def test_a_bad_value_is_one_line(synth_config, over, message):
    with pytest.raises(ValueError, match=message) as info:
        check_values(synth_config("HetComp", **over))
    assert "\n" not in str(info.value)


def test_negative_sampling_is_checked(synth_config):
    bad = {"distribution": "uniform", "sample_num": 0, "alpha": 1.0, "dynamic": False, "candidate_num": 0}
    with pytest.raises(ValueError, match="must be a mapping whose sample_num is an integer > 0"):
        check_values(synth_config("BPR", train_neg_sample_args=bad))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("over, message", [
    ({"device": "cuda"}, r"device=cuda: this machine has no CUDA device \(torch.cuda.is_available\(\) is False\): "
                         "drop --device to run on the CPU"),
    ({"device": "cuda:1"}, "device=cuda:1: this machine has no CUDA device"),
    ({"gpu_id": "1"}, "gpu_id=1: this machine has no CUDA device"),
    ({"device": "tpu"}, "device=tpu: must be cpu or cuda"),
])
def test_asking_for_a_gpu_without_one_is_an_error(synth_config, over, message):
    with pytest.raises(ValueError, match=message):
        synth_config("BPR", **over)


def test_device_cpu_is_the_cpu(synth_config):
    assert synth_config("BPR", device="cpu")["device"] == torch.device("cpu")


# ---------------------------------------------------------------------------- model files


def _export(path, capsys):
    code = cli.main(["--load", str(path), "--export_topk", "5"])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("kind, message", [
    ("garbage", "cannot be read as a model file (UnpicklingError"),
    ("empty", "cannot be read as a model file ("),
    ("truncated", "cannot be read as a model file ("),
    ("foreign", "is not a recbole-hetcomp model file (it holds keys weights, no config and state_dict)"),
    ("a list", "is not a recbole-hetcomp model file (it holds a list, no config and state_dict)"),
])
def test_a_damaged_or_foreign_model_file_is_one_line(tmp_path, capsys, kind, message):
    path = tmp_path / "model.pth"
    if kind == "garbage":
        path.write_bytes(bytes(random.Random(1).getrandbits(8) for _ in range(2000)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"config": None, "state_dict": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:600])
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        torch.save([1, 2], path)
    code, err = _export(path, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {path} ") and message in err[0], err
    assert not (tmp_path / "topk.csv").exists()


def test_a_checkpoint_of_an_unknown_model_is_one_line(tmp_path, capsys, synth_config):
    config = synth_config("BPR")
    config["model"] = "NoSuchModel"
    path = tmp_path / "model.pth"
    torch.save({"config": config, "state_dict": {}}, path)
    code, err = _export(path, capsys)
    assert code == 2 and len(err) == 1 and "holds a model this version does not know (unknown model 'NoSuchModel'" in err[0]


# ---------------------------------------------------------------------------- fuzz


NUMERIC_KEYS = ["seed", "epochs", "train_batch_size", "eval_batch_size", "learning_rate", "weight_decay",
                "embedding_size", "eval_step", "stopping_step", "trajectory_top_n", "hetcomp_k", "hetcomp_p", "dkc_k",
                "dkc_alpha", "dkc_period", "ensemble_tau", "ensemble_fit_max_steps", "ensemble_fit_bags",
                "predict_batch_size", "topk", "init_std", "teacher_cpus"]
RANDOM_VALUES = ["0", "-1", "1", "2", "3", "7", "0.5", "-0.5", "1e9", "1e-9", "abc", "", "None", "nan", "inf",
                 "[1]", "[0]", "True", "{}", "2.0", "100000000000"]


def test_fuzz_numeric_keys_exit_0_or_2_with_one_line(synth, tmp_path, capsys, monkeypatch):
    """A seeded, bounded loop (at most about a minute): random values of numeric keys on a tiny run exit 0, or
    exit 2 with one line and nothing written; never a traceback or exit 1."""
    # RecBole's init_logger wraps the console streams with colorama at every call: a process that runs the
    # command line a hundred times (this test, not a user) would nest the wrappers past the recursion limit
    monkeypatch.setattr("recbole.utils.logger.init", lambda **kwargs: None)
    data_path, name = synth
    rng = random.Random(2026)
    deadline, runs = time.monotonic() + 50, 0
    while time.monotonic() < deadline and runs < 120:
        picks = {rng.choice(NUMERIC_KEYS): rng.choice(RANDOM_VALUES) for _ in range(rng.randint(1, 2))}
        out = tmp_path / f"out{runs}"
        argv = ["-d", name, f"--data_path={data_path}", "--teachers", "Pop", "--no_student", "--output", str(out),
                f"--trajectory_store={tmp_path / 'store'}", "--trajectory_top_n=20", "--state=ERROR",
                "--show_progress=False", *(f"--{k}={v}" for k, v in picks.items())]
        code = cli.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code in (0, 2), (picks, code, err)
        if code == 2:
            assert len(err) == 1 and err[0].startswith("error: ") and "unexpected" not in err[0], (picks, err)
            assert not Path(out).exists(), picks  # nothing written
        runs += 1
    assert runs >= 10
