"""Config overlay precedence, command-line parsing, model and trainer lookup."""

import sys
from pathlib import Path

import pytest
import recbole
import torch
import yaml
from recbole.utils import ModelType

import recbole_hetcomp.trainer
from recbole_hetcomp.model import CML, HetCompEnsemble
from recbole_hetcomp.registry import get_model, get_trainer, is_general_model
from recbole_hetcomp.settings import properties_dir

RECBOLE_OVERALL = Path(recbole.__file__).parent / "properties" / "overall.yaml"


def _yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def _write(path, text):
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------
# Precedence: RecBole < our overall.yaml < our model yaml < files < dict < cmd args
# ---------------------------------------------------------------------------


def test_our_overall_yaml_overrides_recbole_defaults(synth_config):
    ours = _yaml(properties_dir() / "overall.yaml")
    theirs = _yaml(RECBOLE_OVERALL)
    # the keys below are ones where the two files disagree, so the overlay is visible
    for key in ("topk", "valid_metric", "metrics"):
        assert ours[key] != theirs[key], key
    config = synth_config("BPR")
    assert config["topk"] == [10, 20, 50]
    assert config["valid_metric"] == "Recall@50"
    assert config["metrics"] == ["Recall", "NDCG"]
    # our own keys arrive too
    assert config["trajectory_milestones"] == [0.25, 0.5, 0.75, 1.0]
    assert config["trajectory_top_n"] == 100
    assert config["ensemble_importance"] == "exp"
    # RecBole's defaults that we do not touch survive
    assert config["learning_rate"] == theirs["learning_rate"] == 0.001
    assert config["valid_metric_bigger"] is True


def test_our_model_yaml_applies_to_its_model_only(synth_config):
    cml = synth_config("CML")
    assert cml["margin"] == 0.5
    assert cml["embedding_size"] == 64
    assert cml["train_neg_sample_args"]["sample_num"] == 1
    assert synth_config("BPR")["margin"] is None  # CML.yaml is not read for BPR
    # the model lookup is case-insensitive, and the yaml follows the resolved class name
    lower = synth_config("cml")
    assert lower["model"] == "CML"
    assert lower["margin"] == 0.5


def test_config_file_overrides_our_yaml(synth_config, tmp_path):
    f = _write(tmp_path / "run.yaml", "topk: [7]\nmargin: 0.9\nvalid_metric: NDCG@7\n")
    config = synth_config("CML", config_files=[f])
    assert config["topk"] == [7]
    assert config["margin"] == 0.9
    assert config["valid_metric"] == "NDCG@7"
    assert config["metrics"] == ["Recall", "NDCG"]  # untouched key still ours


def test_later_config_file_overrides_earlier(synth_config, tmp_path):
    a = _write(tmp_path / "a.yaml", "topk: [7]\nmargin: 0.9\n")
    b = _write(tmp_path / "b.yaml", "topk: [8]\n")
    config = synth_config("CML", config_files=[a, b])
    assert config["topk"] == [8]
    assert config["margin"] == 0.9


def test_a_config_files_scoped_line_sets_the_key_for_that_model_only(synth_config, tmp_path):
    """``<Model>.key: value`` in --config_files, as in our yaml: that model only, over the plain line whatever the
    order; the student is ``HetComp`` whatever its model, so a teacher's line never reaches it."""
    f = _write(tmp_path / "run.yaml", "LightGCN.epochs: 40\nepochs: 7\nbpr.learning_rate: 0.25\n"
                                      "HetComp.learning_rate: 0.125\n")
    lightgcn, bpr = synth_config("LightGCN", config_files=[f]), synth_config("BPR", config_files=[f])
    assert (lightgcn["epochs"], bpr["epochs"]) == (40, 7)
    assert bpr["learning_rate"] == 0.25 and lightgcn["learning_rate"] != 0.25
    assert not [k for k in lightgcn.final_config_dict if "." in k]  # no scoped key reaches a config
    student = synth_config("HetComp", config_files=[f], student="LightGCN")
    assert (student["epochs"], student["learning_rate"]) == (7, 0.125)
    # the command line still wins over the files
    assert synth_config("LightGCN", config_files=[f], cmd_args=["--epochs=3"])["epochs"] == 3
    with pytest.raises(ValueError, match=r"typo.yaml, line 'LightGNC.epochs': unknown model 'LightGNC'"):
        synth_config("BPR", config_files=[_write(tmp_path / "typo.yaml", "LightGNC.epochs: 4\n")])


def test_config_dict_overrides_file(synth_config, tmp_path):
    f = _write(tmp_path / "run.yaml", "topk: [7]\nmargin: 0.9\n")
    config = synth_config("CML", config_files=[f], topk=[3])
    assert config["topk"] == [3]
    assert config["margin"] == 0.9  # only the keys the dict names are overridden


def test_cmd_args_override_dict(synth_config, tmp_path):
    f = _write(tmp_path / "run.yaml", "topk: [7]\nmargin: 0.9\n")
    config = synth_config("CML", config_files=[f], cmd_args=["--topk=[5]", "--margin=0.25"], topk=[3])
    assert config["topk"] == [5]
    assert config["margin"] == 0.25
    # values are converted like RecBole's own command line
    config = synth_config("BPR", cmd_args=["--epochs=7", "--valid_metric=NDCG@10", "--reproducibility=False"])
    assert config["epochs"] == 7
    assert config["valid_metric"] == "NDCG@10"
    assert config["reproducibility"] is False


def test_same_cmd_arg_twice_with_same_value_is_fine(synth_config):
    assert synth_config("BPR", cmd_args=["--epochs=7", "--epochs=7"])["epochs"] == 7


def test_sys_argv_is_never_read(synth_config, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--topk=[99]", "--epochs=1"])
    config = synth_config("BPR")
    assert config["topk"] == [10, 20, 50]
    assert config["epochs"] != 1


@pytest.mark.parametrize("arg", ["topk=5", "--novalue", "--=5", "-topk=5", "--a=b=c", "topk"])
def test_malformed_cmd_arg_raises(synth_config, arg):
    with pytest.raises(ValueError, match="--key=value") as err:
        synth_config("BPR", cmd_args=[arg])
    assert f"'{arg}'" in str(err.value)  # the offending argument is quoted


def test_conflicting_cmd_args_raise(synth_config):
    with pytest.raises(ValueError, match="--topk given twice with different values"):
        synth_config("BPR", cmd_args=["--topk=[5]", "--topk=[6]"])


def test_model_from_config_dict(synth_config):
    config = synth_config(None, model="CML")
    assert config["model"] == "CML"
    assert config["margin"] == 0.5


def test_no_model_anywhere_raises(synth_config):
    with pytest.raises(KeyError, match="no model given"):
        synth_config(None)


# ---------------------------------------------------------------------------
# Model lookup
# ---------------------------------------------------------------------------


def test_get_model_plugin_first_and_case_insensitive():
    assert get_model("CML") is CML
    assert get_model("cml") is CML
    assert get_model("cMl") is CML
    assert get_model("HetCompEnsemble") is HetCompEnsemble
    assert get_model("hetcompensemble") is HetCompEnsemble


def test_get_model_recbole_models():
    from recbole.model.general_recommender.bpr import BPR
    from recbole.model.general_recommender.ease import EASE
    from recbole.model.general_recommender.neumf import NeuMF
    from recbole.model.sequential_recommender.sasrec import SASRec

    assert get_model("BPR") is BPR
    assert get_model("bpr") is BPR
    assert get_model("NeuMF") is NeuMF  # LightGCN is ours (tests/test_lightgcn.py)
    assert get_model("EASE") is EASE
    assert get_model("SASRec") is SASRec


def test_get_model_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match="unknown model 'BRP'") as err:
        get_model("BRP")
    msg = str(err.value)
    assert "Did you mean" in msg and "bpr" in msg
    assert "CML" in msg  # lists our models


def test_get_model_far_name_has_no_suggestion():
    with pytest.raises(ValueError, match="unknown model 'zzzzqqqq'") as err:
        get_model("zzzzqqqq")
    assert "Did you mean" not in str(err.value)


@pytest.mark.parametrize("bad", ["", None, 3])
def test_get_model_rejects_non_names(bad):
    with pytest.raises(ValueError, match="non-empty string"):
        get_model(bad)


# ---------------------------------------------------------------------------
# Trainer lookup
# ---------------------------------------------------------------------------


def test_get_trainer_falls_back_to_recbole():
    from recbole.trainer import TraditionalTrainer, Trainer

    assert get_trainer(ModelType.GENERAL, "BPR") is Trainer
    assert get_trainer(ModelType.GENERAL, "CML") is Trainer
    assert get_trainer(ModelType.TRADITIONAL, "EASE") is TraditionalTrainer


def test_get_trainer_prefers_our_registry(monkeypatch):
    from recbole.trainer import Trainer

    class FooTrainer:
        pass

    monkeypatch.setitem(recbole_hetcomp.trainer.TRAINERS, "FooTrainer", FooTrainer)
    assert get_trainer(ModelType.GENERAL, "Foo") is FooTrainer
    assert get_trainer(ModelType.GENERAL, "Bar") is Trainer
    # ours wins even over a trainer RecBole itself has for that name
    monkeypatch.setitem(recbole_hetcomp.trainer.TRAINERS, "NCLTrainer", FooTrainer)
    assert get_trainer(ModelType.GENERAL, "NCL") is FooTrainer


def test_recbole_has_its_own_ncl_trainer():
    # makes the override check above meaningful
    from recbole.trainer import NCLTrainer

    assert get_trainer(ModelType.GENERAL, "NCL") is NCLTrainer


# ---------------------------------------------------------------------------
# Model families and properties
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, general", [
    ("BPR", True), ("EASE", True), ("CML", True), ("LightGCN", True), ("HetCompEnsemble", True),
    ("SASRec", False), ("GRU4Rec", False),
])
def test_is_general_model(name, general):
    assert is_general_model(get_model(name)) is general


def test_is_general_model_on_non_models():
    assert is_general_model(object) is False
    assert is_general_model(None) is False


def test_properties_dir():
    props = properties_dir()
    assert (props / "overall.yaml").is_file()
    assert (props / "model" / "CML.yaml").is_file()
    assert _yaml(props / "model" / "CML.yaml")["margin"] == 0.5


def _props_with_dataset_yaml(tmp_path, monkeypatch, name, text):
    import shutil

    import recbole_hetcomp.config

    props = tmp_path / "props"
    shutil.copytree(properties_dir(), props)
    (props / "dataset" / f"{name}.yaml").write_text(text)
    monkeypatch.setattr(recbole_hetcomp.config, "properties_dir", lambda: props)


def test_a_datasets_scoped_line_sets_the_key_for_that_model_only(synth_config, synth_shared, tmp_path, monkeypatch):
    _props_with_dataset_yaml(tmp_path, monkeypatch, synth_shared[1], (
        "train_batch_size: 512\n"
        "BPR.train_batch_size: 4096  # BPR only, over the plain line above whatever the order\n"
        "CML.learning_rate: 0.3\n"))
    bpr, ease = synth_config("BPR"), synth_config("EASE")
    assert bpr["train_batch_size"] == 4096 and ease["train_batch_size"] == 512
    assert bpr["learning_rate"] != 0.3 and ease["learning_rate"] != 0.3
    assert not [k for k in bpr.final_config_dict if "." in k]  # no scoped key reaches a config
    # what the caller sets still wins over the dataset's settings
    assert synth_config("BPR", train_batch_size=64)["train_batch_size"] == 64
    assert synth_config("BPR", cmd_args=["--train_batch_size=32"])["train_batch_size"] == 32


def test_every_scope_in_our_dataset_yaml_names_a_known_model():
    for path in sorted((properties_dir() / "dataset").glob("*.yaml")):
        for key in _yaml(path) or {}:
            if "." in key:
                scope, name = key.split(".", 1)
                assert get_model(scope) is not None and name, f"{path.name}: {key}"


def test_a_scope_in_a_datasets_yaml_that_names_no_model_is_an_error(synth_config, synth_shared, tmp_path, monkeypatch):
    _props_with_dataset_yaml(tmp_path, monkeypatch, synth_shared[1], "LightGNC.train_batch_size: 4096\n")
    with pytest.raises(ValueError, match="unknown model 'LightGNC'"):
        synth_config("BPR")
    _props_with_dataset_yaml(tmp_path / "b", monkeypatch, synth_shared[1], "lightgcn.train_batch_size: 4096\n")
    assert synth_config("LightGCN")["train_batch_size"] == 4096  # scopes are case-insensitive, as on the CLI


def test_a_general_student_brings_its_own_defaults_under_hetcomps(synth_config):
    config = synth_config("HetComp", student="lightgcn")
    assert config["student"] == "LightGCN" and config["n_layers"] == 2  # RecBole's LightGCN default
    assert config["embedding_size"] == 6 and config["learning_rate"] == 0.001  # HetComp's, not LightGCN's 64


def test_looking_up_a_sequential_model_leaves_autograds_anomaly_detection_off():
    # RecBole's SINE switches anomaly detection on when its package is imported (slowing every backward pass
    # after it); a fresh process, so that the package is imported here for the first time
    import subprocess

    code = ("import torch; from recbole_hetcomp.registry import get_model; get_model('SASRec'); "
            "import recbole.model.sequential_recommender.sine; print(torch.is_anomaly_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "False"


def test_a_model_lookup_keeps_the_callers_anomaly_settings():
    prior = torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()
    try:
        torch.autograd.set_detect_anomaly(True, check_nan=False)
        get_model("SASRec")
        assert (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()) == (True, False)
    finally:
        torch.autograd.set_detect_anomaly(*prior)
