"""CiteULike-t: the HetComp protocol's split of a users.dat, on small synthetic files."""

import json

import numpy as np
import pytest

from recbole_hetcomp.data.citeulike import HEADER, drop_unseen, ensure_citeulike, split_users

QUIET = {"show_progress": False, "state": "ERROR"}
PARTS = ("train", "valid", "test")
OUTPUTS = ("citeulike-t.train.inter", "citeulike-t.valid.inter", "citeulike-t.test.inter", "split.json")


def write_users(path, users):
    """A users.dat at ``path``: one line per user, its count then its item ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{len(items)} {' '.join(map(str, items))}".rstrip() + "\n" for items in users))
    return path


def synthetic_users(n_users=60, n_items=40, seed=7):
    """Users of 2 to 14 distinct items out of ``n_items``; every item is popular enough to be in training."""
    rng = np.random.default_rng(seed)
    return [rng.choice(n_items, int(rng.integers(2, 15)), replace=False).tolist() for _ in range(n_users)]


def read_part(folder, part):
    lines = (folder / f"citeulike-t.{part}.inter").read_text().splitlines()
    assert lines[0] == HEADER
    return [tuple(map(int, line.split("\t"))) for line in lines[1:]]


def by_user(rows):
    out = {}
    for u, i in rows:
        out.setdefault(u, []).append(i)
    return out


def snapshot(folder):
    """Every file in ``folder`` with its modification time and content."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------------------ split


def test_split_sizes_follow_the_authors_rule(tmp_path):
    # users 0-39 hold the whole pool of 25 items, so every item lands in someone's training list
    pool = list(range(25))
    sizes = [4, 5, 6, 9, 10, 14, 15, 24]
    hand = [[(k + j) % 25 for j in range(n)] for k, n in enumerate(sizes)]
    source = write_users(tmp_path / "users.dat", [pool] * 40 + hand)

    meta = ensure_citeulike(tmp_path / "data", source=source, split_seed=3)

    folder = tmp_path / "data" / "citeulike-t"
    parts = {part: by_user(read_part(folder, part)) for part in PARTS}
    for k, n in enumerate(sizes):
        u = 40 + k
        if n < 5:
            assert all(u not in parts[part] for part in PARTS)  # the 5-core filter
            continue
        got = [len(parts[part][u]) for part in PARTS]
        assert got == [n - 2 * (n // 5), n // 5, n // 5], (n, got)
        assert sorted(sum((parts[part][u] for part in PARTS), [])) == sorted(hand[k])
    assert all([len(parts[part][u]) for part in PARTS] == [15, 5, 5] for u in range(40))
    assert meta["unseen_items_dropped"] == {"valid": 0, "test": 0} and meta["users_dropped"] == 0
    assert meta["before_split"] == {"users": 47, "items": 25, "interactions": 40 * 25 + sum(sizes) - 4}
    assert meta["rows"] == {part: len(read_part(folder, part)) for part in PARTS}
    assert meta["rows"]["valid"] == meta["rows"]["test"] == 40 * 5 + sum(n // 5 for n in sizes)
    assert meta["split_seed"] == 3


def test_split_is_reproducible_and_differs_across_seeds():
    users = synthetic_users()
    first, again, other = split_users(users, 0), split_users(users, 0), split_users(users, 1)
    assert first == again
    assert first != other
    assert first.keys() == other.keys() == {u for u, items in enumerate(users) if len(items) >= 5}
    for u in first:
        assert [len(p) for p in first[u]] == [len(p) for p in other[u]]
        assert sorted(sum(first[u], [])) == sorted(users[u])


def test_five_core_filter_counts_distinct_items(tmp_path):
    # user 1 lists 5 ids but only 4 distinct items: dropped like user 0 (4 items)
    users = [[1, 2, 3, 4], [1, 2, 3, 4, 4], [1, 2, 3, 4, 5]] + [list(range(10))] * 10
    meta = ensure_citeulike(tmp_path / "data", source=write_users(tmp_path / "users.dat", users))
    train = by_user(read_part(tmp_path / "data" / "citeulike-t", "train"))
    assert sorted(train) == list(range(2, 13))
    assert meta["source"] == {**meta["source"], "users": 13, "items": 10, "interactions": 4 + 5 + 5 + 100,
                              "duplicates_dropped": 1}
    assert meta["before_split"] == {"users": 11, "items": 10, "interactions": 105}


def test_unseen_items_and_users_with_empty_valid_or_test_are_dropped():
    split = {
        0: ([1, 2, 3], [4], [5]),       # 4 unseen: empty valid, so test (5, seen) goes too
        1: ([5, 6, 7], [1, 9], [2]),    # 9 unseen: dropped, 1 stays
        2: ([1, 6, 8], [7], [99]),      # 99 unseen: empty test, so valid (7, seen) goes too
        3: ([2, 3, 8], [6], [1, 7]),    # everything seen
    }
    parts, dropped = drop_unseen(split)
    assert parts["train"] == [(u, i) for u, (train, _, _) in split.items() for i in train]  # training kept whole
    assert parts["valid"] == [(1, 1), (3, 6)]
    assert parts["test"] == [(1, 2), (3, 1), (3, 7)]
    assert dropped == {"unseen_items_dropped": {"valid": 2, "test": 1}, "users_dropped": 2,
                       "seen_items_dropped_with_users": {"valid": 1, "test": 1}}


def test_files_hold_no_unseen_item_and_every_evaluated_user_has_valid_and_test(tmp_path):
    # users 0-9 own items only they have: their valid/test items are never seen in training
    users = [list(range(1000 + 10 * u, 1000 + 10 * u + 5)) for u in range(10)] + synthetic_users()
    meta = ensure_citeulike(tmp_path / "data", source=write_users(tmp_path / "users.dat", users), split_seed=5)
    folder = tmp_path / "data" / "citeulike-t"
    train, valid, test = (read_part(folder, part) for part in PARTS)
    seen = {i for _, i in train}
    assert {i for _, i in valid + test} <= seen
    assert {u for u, _ in valid} == {u for u, _ in test}
    for u in range(10):  # each lost its valid and test, kept its 3 training items
        assert u not in {v for v, _ in valid + test}
        assert len(by_user(train)[u]) == 3
    assert meta["users_dropped"] >= 10
    assert meta["unseen_items_dropped"]["valid"] >= 10 and meta["unseen_items_dropped"]["test"] >= 10
    kept = sum(meta["rows"].values()) + sum(meta["unseen_items_dropped"].values()) \
        + sum(meta["seen_items_dropped_with_users"].values())
    assert kept == meta["before_split"]["interactions"]
    assert meta["after_split"]["evaluated_users"] == len({u for u, _ in test})


# ----------------------------------------------------------------------- files on disk


def test_second_call_rewrites_nothing(tmp_path):
    source = write_users(tmp_path / "users.dat", synthetic_users())
    root = tmp_path / "data"
    first = ensure_citeulike(root, source=source, split_seed=0)
    folder = root / "citeulike-t"
    before = snapshot(folder)
    assert sorted(before) == sorted(OUTPUTS)

    second = ensure_citeulike(root, source=str(source), split_seed=0)

    assert snapshot(folder) == before
    assert {k: v for k, v in first.items() if k != "seconds"} == second
    saved = json.loads((folder / "split.json").read_text())
    assert saved == second
    assert saved["source"]["md5"] and saved["split_seed"] == 0


def test_split_seed_change_regenerates(tmp_path):
    source = write_users(tmp_path / "users.dat", synthetic_users())
    root, folder = tmp_path / "data", tmp_path / "data" / "citeulike-t"
    ensure_citeulike(root, source=source, split_seed=0)
    seed0 = {part: read_part(folder, part) for part in PARTS}

    meta = ensure_citeulike(root, source=source, split_seed=1)

    assert meta["split_seed"] == 1 and json.loads((folder / "split.json").read_text())["split_seed"] == 1
    assert {part: read_part(folder, part) for part in PARTS} != seed0
    assert sorted(p.name for p in folder.iterdir()) == sorted(OUTPUTS)  # no temporary file left
    ensure_citeulike(root, source=source, split_seed=0)
    assert {part: read_part(folder, part) for part in PARTS} == seed0  # same seed, same split


def test_changed_source_or_damaged_output_regenerates(tmp_path):
    source = write_users(tmp_path / "users.dat", synthetic_users())
    root, folder = tmp_path / "data", tmp_path / "data" / "citeulike-t"
    ensure_citeulike(root, source=source)
    good = (folder / "citeulike-t.test.inter").read_text()
    (folder / "citeulike-t.test.inter").write_text(HEADER + "\n")  # damaged by hand
    ensure_citeulike(root, source=source)
    assert (folder / "citeulike-t.test.inter").read_text() == good

    write_users(source, synthetic_users(seed=8))
    meta = ensure_citeulike(root, source=source)
    assert (folder / "citeulike-t.test.inter").read_text() != good
    assert meta["source"]["md5"] == json.loads((folder / "split.json").read_text())["source"]["md5"]


def test_default_source_and_reuse_without_source(tmp_path):
    root, folder = tmp_path / "data", tmp_path / "data" / "citeulike-t"
    write_users(folder / "users.dat", synthetic_users())
    meta = ensure_citeulike(root)  # found at <data_root>/citeulike-t/users.dat
    assert meta["source"]["path"] == str(folder / "users.dat")

    (folder / "users.dat").unlink()
    before = snapshot(folder)
    assert ensure_citeulike(root) == json.loads((folder / "split.json").read_text())  # intact split, same seed
    assert snapshot(folder) == before
    with pytest.raises(FileNotFoundError, match="users.dat"):
        ensure_citeulike(root, split_seed=1)  # another seed needs the source


# ------------------------------------------------------------------------------ errors


def test_missing_file_is_one_line_saying_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ensure_citeulike(tmp_path / "data")
    message = str(err.value)
    assert "\n" not in message
    for part in ("users.dat", "js05212/citeulike-t", str(tmp_path / "data" / "citeulike-t" / "users.dat"),
                 "--archive PATH"):
        assert part in message

    with pytest.raises(FileNotFoundError) as err:
        ensure_citeulike(tmp_path / "data", source=tmp_path / "nope.dat")
    assert "nope.dat does not exist" in str(err.value) and "js05212/citeulike-t" in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("text, match", [
    ("3 1 2 3\n2 4 5 6\n", r"users.dat line 2 \(user 1\): the count says 2 items but 3 ids follow"),
    ("3 1 2 3\n3 4 x 6\n", r"users.dat line 2 \(user 1\): the item id 'x' is not an integer"),
    ("3 1 2 3\n2 1.5 6\n", r"line 2 \(user 1\): the item id '1.5' is not an integer"),
    ("3 1 2 3\n1 2\n2 4 -6\n", r"users.dat line 3 \(user 2\): the item id '-6' is negative"),
    ("a 1 2\n", r"users.dat line 1 \(user 0\): the count 'a' is not a non-negative integer"),
    ("3 1 2 3\n\n1 4\n", r"users.dat line 2 \(user 1\) is empty"),
    ("", r"users.dat is empty"),
    ("\n  \n", r"users.dat is empty"),
])
def test_bad_input_names_file_line_and_fix(tmp_path, text, match):
    source = tmp_path / "users.dat"
    source.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        ensure_citeulike(tmp_path / "data", source=source)
    assert "js05212/citeulike-t" in str(err.value)  # the fix: where to get the real file
    if "line" in match:
        assert "'<count> <item id> <item id> ...'" in str(err.value)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*"))


def test_an_error_leaves_the_previous_split_whole(tmp_path):
    source = write_users(tmp_path / "users.dat", synthetic_users())
    root, folder = tmp_path / "data", tmp_path / "data" / "citeulike-t"
    ensure_citeulike(root, source=source)
    before = snapshot(folder)

    source.write_text(source.read_text() + "2 1\n")
    with pytest.raises(ValueError, match="line 61"):
        ensure_citeulike(root, source=source)
    assert snapshot(folder) == before


def test_a_failed_write_leaves_no_file_behind(tmp_path, monkeypatch):
    from recbole_hetcomp.data import citeulike

    source = write_users(tmp_path / "users.dat", synthetic_users())
    real = citeulike._write_temp
    calls = []

    def failing(folder, name, text):
        calls.append(name)
        if name == "split.json":
            raise OSError("disk full")
        return real(folder, name, text)

    monkeypatch.setattr(citeulike, "_write_temp", failing)
    with pytest.raises(OSError, match="disk full"):
        ensure_citeulike(tmp_path / "data", source=source)
    assert calls == list(OUTPUTS)
    assert list((tmp_path / "data" / "citeulike-t").iterdir()) == []


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None, True])
def test_bad_split_seed(tmp_path, seed):
    with pytest.raises(ValueError, match="split_seed must be a non-negative integer"):
        ensure_citeulike(tmp_path, source=write_users(tmp_path / "users.dat", synthetic_users()), split_seed=seed)


# ------------------------------------------------------------------------------ RecBole


def test_load_data_reads_exactly_the_three_files(tmp_path):
    from recbole_hetcomp.config import make_config
    from recbole_hetcomp.run.training import load_data
    from recbole_hetcomp.trajectories.store import result_config, teacher_key

    source = write_users(tmp_path / "users.dat", synthetic_users())
    data_path = tmp_path / "data" / "citeulike-t"
    results = {}
    for seed in (0, 1):
        config = make_config("BPR", "citeulike-t", config_dict={
            **QUIET, "data_path": str(tmp_path / "data"), "dataset_archive": str(source), "split_seed": seed})
        data = load_data(config)
        for part in PARTS:
            ds = getattr(data, part)._dataset
            tokens = {f: ds.field2id_token[f] for f in (ds.uid_field, ds.iid_field)}
            rows = sorted((int(tokens[ds.uid_field][u]), int(tokens[ds.iid_field][i]))
                          for u, i in zip(ds.inter_feat[ds.uid_field].tolist(), ds.inter_feat[ds.iid_field].tolist()))
            assert rows == sorted(read_part(data_path, part)), (seed, part)
        assert config["eval_args"]["mode"] == {"valid": "full", "test": "full"}
        results[seed] = (result_config(config), teacher_key(config, data.fingerprint), data.fingerprint)
    # the split seed reaches the teacher store key twice: as a config key and through the split's fingerprint
    assert results[0][0]["split_seed"] == 0 and results[1][0]["split_seed"] == 1
    assert results[0][2] != results[1][2]
    assert results[0][1] != results[1][1]


def test_other_datasets_have_no_split_seed():
    from recbole_hetcomp.config import make_config

    config = make_config("BPR", "ml-100k", config_dict=QUIET)
    assert config["split_seed"] is None and config["benchmark_filename"] is None
