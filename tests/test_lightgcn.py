"""Our LightGCN: RecBole's model with the propagation held in CSR; same parameters, same scores and gradients (to
float rounding), checkpoints interchangeable, and found first by name."""

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.model.general_recommender.lightgcn import LightGCN as RecBoleLightGCN
from recbole.utils import init_seed
from torch.testing import assert_close

from recbole_hetcomp.model import LightGCN
from recbole_hetcomp.model.general import GENERAL, by_name
from recbole_hetcomp.model.hetcomp import student_class
from recbole_hetcomp.model.lightgcn import csr_pair, propagate
from recbole_hetcomp.registry import get_model
from recbole_hetcomp.run.training import load_data


@pytest.fixture(scope="module")
def synth_data(synth_config, fresh_dir):
    with fresh_dir("lightgcn_cwd"):
        return load_data(synth_config("LightGCN", embedding_size=4))


def _pair(synth_config, synth_data, **config):
    """RecBole's LightGCN and ours, same seed, same weights."""
    cfg = synth_config("LightGCN", **{"embedding_size": 4, **config})
    init_seed(0, True)
    theirs = RecBoleLightGCN(cfg, synth_data.train_dataset)
    init_seed(0, True)
    ours = LightGCN(cfg, synth_data.train_dataset)
    return theirs, ours


def test_the_product_and_its_gradient_on_a_hand_built_matrix():
    coo = torch.sparse_coo_tensor(torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0]]), torch.tensor([2.0, 3.0, 4.0, 5.0]),
                                  (3, 3))
    a, t = csr_pair(coo)
    assert t is not a  # not symmetric: the transpose is its own matrix
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    y = propagate(a, t, x)
    assert torch.equal(y, torch.tensor([[3.0, 5.0], [4.0, 0.0], [5.0, 0.0]]))
    y.backward(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))  # A^T @ grad
    assert torch.equal(x.grad, torch.tensor([[5.0, 9.0], [2.0, 0.0], [3.0, 0.0]]))


def test_a_symmetric_matrix_is_held_once():
    coo = torch.sparse_coo_tensor(torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), torch.tensor([0.5, 0.5, 0.25, 0.25]),
                                  (3, 3))
    a, t = csr_pair(coo)
    assert t is a and a.layout == torch.sparse_csr
    assert torch.equal(a.to_dense(), coo.to_dense())


def test_same_parameters_scores_and_gradients_as_recboles(synth_config, synth_data):
    theirs, ours = _pair(synth_config, synth_data, n_layers=3)
    assert ours.norm_adj_matrix_t is ours.norm_adj_matrix  # LightGCN's normalised adjacency is symmetric
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value)
    for a, b in zip(theirs.forward(), ours.forward()):
        assert_close(b, a, rtol=1e-5, atol=1e-6)
    users = torch.tensor([1, 2, 3, 4, 5, 6])
    batch = Interaction({theirs.USER_ID: users, theirs.ITEM_ID: torch.tensor([1, 2, 3, 4, 5, 6]),
                         theirs.NEG_ITEM_ID: torch.tensor([7, 8, 9, 10, 11, 12])})
    theirs.calculate_loss(batch).backward()
    ours.calculate_loss(batch).backward()
    assert ours.user_embedding.weight.grad.abs().sum() > 0
    assert_close(ours.user_embedding.weight.grad, theirs.user_embedding.weight.grad, rtol=1e-4, atol=1e-6)
    assert_close(ours.item_embedding.weight.grad, theirs.item_embedding.weight.grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        assert_close(ours.full_sort_predict(Interaction({ours.USER_ID: users})),
                     theirs.full_sort_predict(Interaction({theirs.USER_ID: users})), rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_either_loads_into_the_other(synth_config, synth_data):
    theirs, ours = _pair(synth_config, synth_data)
    with torch.no_grad():
        theirs.user_embedding.weight.add_(1.0)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert torch.equal(ours.user_embedding.weight, theirs.user_embedding.weight)


def test_lightgcn_by_name_is_ours_for_teachers_and_students():
    assert get_model("LightGCN") is LightGCN and get_model("lightgcn") is LightGCN
    assert student_class("LightGCN") is LightGCN
    for name, cls in GENERAL.items():  # one list makes our general models teachers and students
        assert get_model(name) is cls and student_class(name.lower()) is cls
    assert issubclass(LightGCN, RecBoleLightGCN)


def test_by_name_ignores_case_and_misses_with_none():
    table = {"LightGCN": LightGCN, "CML": "cml class"}
    assert by_name(table, "lIGHTgcn") is LightGCN and by_name(table, "cml") == "cml class"
    assert by_name(table, "LightGCN ") is None and by_name({}, "CML") is None


def test_a_misspelt_model_is_suggested_once():
    with pytest.raises(ValueError, match=r"Did you mean: lightgcn, lightgbm\?$"):
        get_model("LigthGCN")
