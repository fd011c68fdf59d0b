"""Full ranking by a model without ``full_sort_predict``: pair scoring bounded by predict_batch_size."""

import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_hetcomp.registry import get_model, get_trainer
from recbole_hetcomp.run.preflight import check_pipeline
from recbole_hetcomp.run.training import checkpointed, evaluate_model, load_data
from recbole_hetcomp.trainer.base import full_sort_scorer


def _neumf(synth_config, **overrides):
    config = synth_config("NeuMF", seed=7, **overrides)
    data = load_data(config)
    torch.manual_seed(0)
    model = get_model("NeuMF")(config, data.train_dataset).eval()
    return config, data, model


def _recorded_predict(model, sizes):
    predict = model.predict

    def recording(interaction):
        sizes.append(len(interaction))
        return predict(interaction)

    model.predict = recording


def test_neumf_scores_at_most_predict_batch_size_pairs_at_once(synth_config):
    # 30 users x 81 items = 2,430 pairs, which eval_batch_size alone would score in one call
    config, data, model = _neumf(synth_config, eval_batch_size=4096, predict_batch_size=100)
    trainer = checkpointed(get_trainer(config["MODEL_TYPE"], "NeuMF"))(config, model)
    sizes = []
    _recorded_predict(model, sizes)
    users = torch.arange(1, 31)
    with torch.no_grad():
        scores = full_sort_scorer(trainer, data.train_dataset)(users)
    n_items = data.train_dataset.item_num
    assert scores.shape == (30, n_items)
    assert max(sizes) == 100 and sum(sizes) == 30 * n_items
    # the same scores as one call over every pair
    pairs = {"user_id": users.repeat_interleave(n_items), "item_id": torch.arange(n_items).repeat(30)}
    with torch.no_grad():
        whole = model.predict(Interaction(pairs)).view(30, n_items)
    whole[:, 0] = -float("inf")
    assert torch.allclose(scores, whole, rtol=0, atol=1e-6)


def test_evaluation_is_bounded_too_and_metrics_do_not_depend_on_the_bound(synth_config):
    results, sizes = {}, {}
    for bound in (50, None):
        _, data, model = _neumf(synth_config, eval_batch_size=4096, predict_batch_size=bound)
        sizes[bound] = []
        _recorded_predict(model, sizes[bound])
        with torch.no_grad():
            results[bound] = evaluate_model(model, data, phases=("valid",))["valid"]
    assert max(sizes[50]) == 50
    assert max(sizes[None]) > 50  # without a bound RecBole sends a whole batch of users' pairs
    assert results[50] == results[None]


@pytest.mark.parametrize("value", [0, -4096, 1.5, True])
def test_a_bad_predict_batch_size_is_refused_before_anything_runs(synth, value, tmp_path):
    data_path, name = synth
    with pytest.raises(ValueError, match=f"predict_batch_size={value!r}: must be an integer > 0 or None"):
        check_pipeline(name, teachers=["BPR"], config_dict={"data_path": str(data_path), "state": "ERROR",
                                                             "predict_batch_size": value},
                       output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
