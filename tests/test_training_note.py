"""The line a run adds where a training's end says more about its length: stopped on its first evaluation's score,
or cut by the epoch limit while still rising (hand-built curves; the ml-1m LightGCN student's plateau is the case)."""

from types import SimpleNamespace

from recbole_hetcomp.run.pipeline import teacher_row, training_notes
from recbole_hetcomp.run.training import training_note

CONFIG = {"epochs": 1000, "stopping_step": 5, "valid_metric": "recall@50"}
# seed 2021's LightGCN student on ml-1m at the MF student's settings: no evaluation after epoch 9 beat it
PLATEAU = {"epochs": [9, 19, 29, 39, 49, 59, 69], "scores": [0.2029, 0.1997, 0.1978, 0.1988, 0.2, 0.201, 0.202]}


def test_early_stopping_on_the_first_evaluations_score_is_a_possible_plateau():
    assert training_note(PLATEAU, 70, CONFIG) == (
        "early stopping ended it after epoch 69 with no validation recall@50 above its first evaluation's "
        "(0.2029, epoch 9): it may have stopped on a plateau; a larger stopping_step (now 5 evaluations) lets it "
        "train on")
    # a later tie counts too: RecBole's early stopping takes a tie as its best, and nothing rose
    flat = {"epochs": [0, 1, 2, 3], "scores": [0.2039, 0.2039, 0.2029, 0.203]}
    assert training_note(flat, 4, CONFIG).startswith("early stopping ended it after epoch 3 with no validation "
                                                     "recall@50 above its first evaluation's (0.2039, epoch 0)")


def test_every_epoch_used_with_the_last_evaluation_best_is_still_rising():
    rising = {"epochs": [979, 989, 999], "scores": [0.3718, 0.372, 0.3724]}
    assert training_note(rising, 1000, CONFIG) == (
        "it trained all 1000 epochs and its last evaluation was its best (validation recall@50 0.3724, epoch 999): "
        "more epochs may raise it")


def test_other_endings_get_no_line():
    improved_then_stopped = {"epochs": [9, 19, 29], "scores": [0.30, 0.35, 0.34]}
    assert training_note(improved_then_stopped, 80, CONFIG) is None
    peaked_before_the_limit = {"epochs": [979, 989, 999], "scores": [0.3718, 0.3725, 0.3724]}
    assert training_note(peaked_before_the_limit, 1000, CONFIG) is None
    flat_to_the_limit = {"epochs": [0, 1], "scores": [0.2, 0.2]}  # nothing rose: neither ending says more
    assert training_note(flat_to_the_limit, 2, {**CONFIG, "epochs": 2}) is None
    assert training_note({"epochs": [0], "scores": [0.4]}, 1, CONFIG) is None  # one evaluation (EASE)
    assert training_note(None, None, CONFIG) is None  # nothing recorded
    assert training_note(PLATEAU, 70, {}) is None  # a stored teacher without its settings


def test_a_stored_teachers_row_carries_its_note_into_the_footer():
    meta = {"valid_curve": PLATEAU, "epochs": 70, "config": CONFIG, "test": {"recall@20": 0.1}}
    row = teacher_row(SimpleNamespace(teacher="LightGCN", meta=meta))
    assert row["training_note"] == training_note(PLATEAU, 70, CONFIG)
    quiet = teacher_row(SimpleNamespace(teacher="BPR", meta={**meta, "valid_curve": {"epochs": [0, 1],
                                                                                     "scores": [0.1, 0.2]}}))
    assert "training_note" not in quiet
    assert training_notes([quiet, row]) == [f"- LightGCN: {row['training_note']}."]
