#!/usr/bin/env bash
# Reproduce benchmarks/results/*/results.{md,json} on ../shared/data (real data, not shipped).
# ANTs SyN and elastix run in the same process as the regcore methods, so this uses .venv-bench
# (make bench-env: the [elastix,ants] extras; antspyx pins numpy<2.4 and scipy<1.16).
# Usage: bash benchmarks/run_all.sh [sample_brain2d brain2d histology2d spine brain3d]  (default: all but brain3d)
# sample_brain2d uses the project's own sample data (built here first), the others ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv-bench/bin/python}
test -x "$PY" || make bench-env
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
METHODS_2D=${METHODS_2D:-affine,fireants,svf,mind_convex,bspline,demons,sitk_affine_mi,sitk_bspline,sitk_demons,elastix,ants_syn,voxelmorph,transmorph}
METHODS_3D=${METHODS_3D:-fireants,demons,sitk_demons,ants_syn,elastix}
SETS=(${BENCH_SETS:-sample_brain2d brain2d histology2d spine})
[ $# -gt 0 ] && SETS=("$@")
# Multi-modal sets (histology stains, spine T1w/T2w) use mutual information for bspline.
MULTIMODAL_SETS=(--set bspline.similarity=mi)
for set in "${SETS[@]}"; do
  extra=()
  case "$set" in
    sample_brain2d) "$PY" -m regcore.data.samples --quiet; methods=$METHODS_2D ;;
    brain2d)     methods=$METHODS_2D ;;
    histology2d) methods=${METHODS_HISTO:-affine,sitk_affine_mi,mind_convex,elastix,ants_syn} ;;
    spine)       methods=${METHODS_SPINE:-affine,rigid,demons,fireants,mind_convex,bspline,sitk_affine_mi,sitk_bspline,sitk_demons,elastix,ants_syn}; extra=("${MULTIMODAL_SETS[@]}") ;;   # 3D but tiny (42x76x77 / 60x55x52)
    brain3d)     methods=$METHODS_3D ;;
    *) echo "unknown set $set" >&2; exit 2 ;;
  esac
  # --fresh: a reference run measures every task now (its times included), not results an earlier run of the same
  # code and inputs left in OUT/tasks.
  "$PY" -m regcore.cli bench --pairs "benchmarks/manifests/$set.csv" --methods "$methods" "${extra[@]}" \
      --device auto --fresh --out "benchmarks/results/$set"
done
