"""CML: unit-ball points, scores as negative squared distances, the hinge loss, and that it learns."""

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.utils import init_seed
from torch.testing import assert_close

from recbole_hetcomp.config import make_config
from recbole_hetcomp.model import CML
from recbole_hetcomp.registry import get_model, get_trainer
from recbole_hetcomp.run.training import load_data
from recbole_hetcomp.trainer import CheckpointMixin


@pytest.fixture(scope="module")
def synth_data(synth_config, fresh_dir):
    with fresh_dir("cml_cwd"):
        return load_data(synth_config("CML", embedding_size=3))


def _model(synth_config, synth_data, **config):
    cfg = synth_config("CML", **{"embedding_size": 3, **config})
    init_seed(0, True)
    return CML(cfg, synth_data.train_dataset)


def _project(w):
    """Rows scaled back onto the unit sphere when outside it."""
    return w / w.norm(dim=1, keepdim=True).clamp_min(1.0)


def test_cml_reads_its_config(synth_config, synth_data):
    model = _model(synth_config, synth_data)
    assert model.margin == 0.5 and model.embedding_size == 3
    assert model.user_embedding.weight.shape == (synth_data.train_dataset.user_num, 3)
    assert model.item_embedding.weight.shape == (synth_data.train_dataset.item_num, 3)
    assert _model(synth_config, synth_data, margin=1.25).margin == 1.25


def test_cml_points_stay_in_the_unit_ball(synth_config, synth_data):
    model = _model(synth_config, synth_data)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.randn(model.user_embedding.weight.shape, generator=g) * 10)
        model.item_embedding.weight.copy_(torch.randn(model.item_embedding.weight.shape, generator=g) * 10)
        model.user_embedding.weight[1] = torch.tensor([0.1, -0.2, 0.3])  # already inside: untouched
    users = torch.arange(model.n_users)
    items = torch.arange(model.n_items)
    with torch.no_grad():
        up, ip = model._users(users), model._items(items)
    assert up.norm(dim=1).max() <= 1 + 1e-6 and ip.norm(dim=1).max() <= 1 + 1e-6
    raw_norms = model.user_embedding.weight.detach().norm(dim=1)
    assert (raw_norms > 1).float().mean() > 0.9  # the raw rows (but row 1) really were outside
    assert_close(up[1], torch.tensor([0.1, -0.2, 0.3]))
    assert_close(up, _project(model.user_embedding.weight.detach()), atol=1e-6, rtol=1e-5)
    # the projection keeps directions
    cos = torch.nn.functional.cosine_similarity(ip, model.item_embedding.weight.detach(), dim=1)
    assert_close(cos, torch.ones_like(cos))
    # hence every squared distance the model uses is at most (1 + 1)^2
    with torch.no_grad():
        d = model.forward(users.repeat_interleave(model.n_items), items.repeat(model.n_users))
    assert d.max() <= 4 + 1e-5
    assert d.min() >= 0


def test_cml_full_sort_predict_is_minus_squared_distance(synth_config, synth_data):
    model = _model(synth_config, synth_data)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.randn(model.user_embedding.weight.shape, generator=g))
        model.item_embedding.weight.copy_(torch.randn(model.item_embedding.weight.shape, generator=g) * 0.7)
    users = [3, 17, 42]
    ds = synth_data.train_dataset
    with torch.no_grad():
        got = model.full_sort_predict(Interaction({ds.uid_field: torch.tensor(users)}))
    assert got.shape == (len(users) * ds.item_num,)
    got = got.view(len(users), -1)
    up = _project(model.user_embedding.weight.detach())
    ip = _project(model.item_embedding.weight.detach())
    for row, u in enumerate(users):
        want = torch.tensor([-float(((up[u] - ip[i]) ** 2).sum()) for i in range(ds.item_num)])
        assert_close(got[row], want, atol=1e-5, rtol=1e-5)
    # predict agrees on (user, item) pairs
    items = torch.tensor([1, 5, 9])
    with torch.no_grad():
        pred = model.predict(Interaction({ds.uid_field: torch.tensor(users), ds.iid_field: items}))
    assert_close(pred, got[torch.arange(3), items], atol=1e-5, rtol=1e-5)


def _hand_set(model):
    with torch.no_grad():
        model.user_embedding.weight[1] = torch.tensor([0.1, 0.2])
        model.user_embedding.weight[2] = torch.tensor([-0.5, 0.0])
        model.item_embedding.weight[1] = torch.tensor([0.3, 0.0])
        model.item_embedding.weight[2] = torch.tensor([0.0, 0.5])
        model.item_embedding.weight[3] = torch.tensor([0.6, 0.8])   # on the sphere
        model.item_embedding.weight[4] = torch.tensor([-0.5, 0.1])
        model.item_embedding.weight[5] = torch.tensor([3.0, 4.0])   # outside: used as (0.6, 0.8)


def _batch(model, users, pos, neg):
    return Interaction({model.USER_ID: torch.tensor(users), model.ITEM_ID: torch.tensor(pos),
                        model.NEG_ITEM_ID: torch.tensor(neg)})


def test_cml_loss_by_hand(synth_config, synth_data):
    model = _model(synth_config, synth_data, embedding_size=2)
    _hand_set(model)
    # (u1, +i1, -i2): d+ = 0.2^2 + 0.2^2 = 0.08, d- = 0.1^2 + 0.3^2 = 0.10 -> 0.5 + 0.08 - 0.10 = 0.48
    # (u2, +i4, -i3): d+ = 0 + 0.1^2 = 0.01, d- = 1.1^2 + 0.8^2 = 1.85 -> 0.5 + 0.01 - 1.85 < 0 -> 0
    loss = model.calculate_loss(_batch(model, [1, 2], [1, 4], [2, 3]))
    assert loss.item() == pytest.approx((0.48 + 0.0) / 2, abs=1e-6)
    # the negative outside the ball is projected: (u2, +i4, -i5) is the same as -i3
    loss5 = model.calculate_loss(_batch(model, [2], [4], [5]))
    assert loss5.item() == pytest.approx(0.0, abs=1e-6)
    # swapping roles: (u1, +i2, -i1): 0.5 + 0.10 - 0.08 = 0.52
    assert model.calculate_loss(_batch(model, [1], [2], [1])).item() == pytest.approx(0.52, abs=1e-6)
    # forward is the squared distance
    assert_close(model.forward(torch.tensor([1, 2]), torch.tensor([1, 5])), torch.tensor([0.08, 1.85]))


def test_cml_loss_uses_the_configured_margin(synth_config, synth_data):
    model = _model(synth_config, synth_data, embedding_size=2, margin=1.0)
    _hand_set(model)
    # 1 + 0.08 - 0.10 = 0.98; 1 + 0.01 - 1.85 < 0 -> 0
    loss = model.calculate_loss(_batch(model, [1, 2], [1, 4], [2, 3]))
    assert loss.item() == pytest.approx(0.49, abs=1e-6)


def test_cml_loss_gradient_pulls_positive_closer(synth_config, synth_data):
    model = _model(synth_config, synth_data, embedding_size=2)
    _hand_set(model)
    loss = model.calculate_loss(_batch(model, [1], [1], [2]))
    loss.backward()
    gu = model.user_embedding.weight.grad[1]
    # d/du (d+ - d-) = 2(u - i+) - 2(u - i-) = 2(i- - i+) = 2((0, .5) - (.3, 0)) = (-0.6, 1.0)
    assert_close(gu, torch.tensor([-0.6, 1.0]))
    # an active hinge moves the positive towards the user: d/di+ = -2(u - i+) = -2(-0.2, 0.2)
    assert_close(model.item_embedding.weight.grad[1], torch.tensor([0.4, -0.4]))


# ---------------------------------------------------------------------------
# Learning: CML beats popularity and random ranking on RecBole's bundled ml-100k
# ---------------------------------------------------------------------------


def _train_and_test(name, eval_step, quiet):
    config = make_config(name, "ml-100k", config_dict={
        **quiet, "epochs": 5, "learning_rate": 0.01, "eval_step": eval_step})
    data = load_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(name)(config, data.train_dataset)
    trainer_class = type("T", (CheckpointMixin, get_trainer(config["MODEL_TYPE"], name)), {})
    trainer = trainer_class(config, model)
    trainer.fit(data.train, data.valid, saved=True, show_progress=False)
    return trainer.evaluate(data.test, load_best_model=True)


def test_cml_learns_on_ml_100k(quiet):
    cml = _train_and_test("CML", eval_step=5, quiet=quiet)
    # Pop and Random train one epoch (RecBole's TraditionalTrainer): validate after it
    pop = _train_and_test("Pop", eval_step=1, quiet=quiet)
    rand = _train_and_test("Random", eval_step=1, quiet=quiet)
    assert cml["recall@20"] > 1.3 * pop["recall@20"], (cml, pop)
    assert cml["ndcg@20"] > 1.3 * pop["ndcg@20"], (cml, pop)
    assert pop["recall@20"] > 3 * rand["recall@20"], (pop, rand)
