#!/usr/bin/env bash
# Reproduce benchmarks/results/*/results.{md,json} on ../shared/data (real data, not shipped).
# ANTs SyN and elastix run in the same process as the regcore methods, so this uses .venv-bench
# (make bench-env: the [elastix,ants] extras; antspyx pins numpy<2.4 and scipy<1.16).
# Usage: bash benchmarks/run_all.sh [brain2d histology2d spine brain3d]   (default: all but brain3d)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv-bench/bin/python}
test -x "$PY" || make bench-env
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
METHODS_2D=${METHODS_2D:-sitk_affine_mi,bspline,demons,sitk_bspline,sitk_demons,elastix,ants_syn}
METHODS_3D=${METHODS_3D:-demons,bspline,sitk_demons,ants_syn,elastix}
SETS=(${BENCH_SETS:-brain2d histology2d spine})
[ $# -gt 0 ] && SETS=("$@")
for set in "${SETS[@]}"; do
  case "$set" in
    brain2d)    methods=$METHODS_2D ;;
    histology2d) methods=$METHODS_2D ;;
    spine)      methods=$METHODS_2D ;;   # 3D but tiny (42x76x77 / 60x55x52)
    brain3d)    methods=$METHODS_3D ;;
    *) echo "unknown set $set" >&2; exit 2 ;;
  esac
  "$PY" -m regcore.cli bench --pairs "benchmarks/manifests/$set.csv" --methods "$methods" \
      --device auto --out "benchmarks/results/$set"
done
