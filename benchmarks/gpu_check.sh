#!/usr/bin/env bash
# The GPU check, one prepared script of about 8 minutes, for a session whose device tool lends a CUDA machine.
# CI never runs it and nothing else needs it.
#
# Here (a machine with pip access), once:   bash benchmarks/gpu_check.sh --fetch
#   downloads into the git-ignored .whl/ the cp312 wheels the device image lacks or holds in versions RecBole 1.2.1
#   cannot use (numpy<2, pandas<3, recbole 1.2.1 and its small pure-Python needs); and, when data/ml-1m.zip exists,
#   nothing else: the archive travels through `carry`.
# There (the device tool's run, carry [".whl", "data/ml-1m.zip"], timeout_s 560):
#   bash benchmarks/gpu_check.sh
#   1. the CUDA tests (pytest -m "not slow" -k cuda, and the CUDA-only student test);
#   2. the ml-100k pipeline with --device=cuda (six teachers, ensemble, student, MF baseline);
#   3. as much of ml-1m as the time left allows (--device=cuda, same command as the CPU first run);
#   and writes the per-stage times to $OUT/gpu_ml-100k.md, $OUT/gpu_ml-1m.md (copy them to benchmarks/results/).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(numpy==1.26.4 pandas==2.2.3 recbole==1.2.1 colorlog==6.9.0 texttable==1.7.0 thop==0.1.1.post2209072238
        tabulate==0.9.0)

if [[ "${1:-}" == "--fetch" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "${WHEELS[@]}"
    du -sh .whl
    exit 0
fi

OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
START=$(date +%s)
left() { echo $(( ${BUDGET_S:-500} - ($(date +%s) - START) )); }
if [[ -d .whl ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
{
    echo "# GPU check ($(date -u +%F), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
    python3 -c "import torch, numpy, recbole; print(f'torch {torch.__version__}, numpy {numpy.__version__}, recbole {recbole.__version__}, cuda {torch.cuda.is_available()}')"
} | tee "$OUT/gpu_env.md"

echo "== 1. CUDA tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_student.py -k cuda 2>&1 | tail -5 | tee "$OUT/gpu_tests.txt"

echo "== 2. ml-100k pipeline on cuda ($(left) s left)"
timeout "$(( $(left) > 240 ? 240 : $(left) ))" python3 run_recbole_hetcomp.py --dataset ml-100k --device=cuda \
    --output "$OUT/ml-100k" > "$OUT/gpu_ml-100k.log" 2>&1
echo "exit $?" >> "$OUT/gpu_ml-100k.log"
cp "$OUT/ml-100k/results.md" "$OUT/gpu_ml-100k.md" 2>/dev/null || tail -20 "$OUT/gpu_ml-100k.log"

if [[ -f data/ml-1m.zip && $(left) -gt 60 ]]; then
    echo "== 3. ml-1m on cuda ($(left) s left)"
    timeout "$(left)" python3 run_recbole_hetcomp.py --dataset ml-1m --data_path=data/ --device=cuda \
        --output "$OUT/ml-1m" > "$OUT/gpu_ml-1m.log" 2>&1
    echo "exit $?" >> "$OUT/gpu_ml-1m.log"
    cp "$OUT/ml-1m/results.md" "$OUT/gpu_ml-1m.md" 2>/dev/null \
        || grep -E "^\[[0-9]+/[0-9]+\]|done in|error" "$OUT/gpu_ml-1m.log" | tail -20 > "$OUT/gpu_ml-1m.md"
fi
# the logs are large: keep their ends only (8 files at most come back)
for f in "$OUT"/*.log; do tail -200 "$f" > "$f.tail" && mv "$f.tail" "$f"; done
rm -rf "$OUT/ml-100k" "$OUT/ml-1m"
ls -la "$OUT"
