#!/usr/bin/env bash
# GPU check: absolute figures of ppox on the machine's accelerator in under 8 minutes
# (benchmarks/gpu_check.py: CartPole at 4,096 and 16,384 envs, a 64-configuration sweep,
# brax/ant and playground/CartpoleBalance at 4,096 envs, peers where their venvs exist;
# compile and run time apart, each step in a fresh process under its own time limit).
#
#   bash benchmarks/gpu_check.sh             # on the GPU machine (README, "GPU check")
#   bash benchmarks/gpu_check.sh --smoke     # the same steps at tiny sizes on the CPU
#   bash benchmarks/gpu_check.sh --steps device,cartpole   # any gpu_check.py option
#
# Where .whl/ exists (benchmarks/gpu_wheels.sh) and the env packages are not importable,
# the carried wheels are installed into $PPOX_GPU_SITE (default /tmp/site) first. Results:
# benchmarks/results/<machine>/gpu_check/ (smoke: a temporary folder); where $OUT is set
# (the device tool), also $OUT/gpu_check.log, summary.md, summary.json and
# gpu_check.tar.gz (the results folder; unpack it in the repository root).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
SITE=${PPOX_GPU_SITE:-/tmp/site}
export PYTHONUNBUFFERED=1
log=${OUT:-${TMPDIR:-/tmp}}/gpu_check.log
[[ -n ${OUT:-} ]] && mkdir -p "$OUT"

missing=$("$PY" - <<'EOF'
import importlib.util as u
print(" ".join(m for m in ("gymnax", "brax", "mujoco", "mujoco_playground", "tyro")
               if u.find_spec(m) is None))
EOF
)
{
  echo "gpu_check.sh: $(date -u +%FT%TZ), $("$PY" --version 2>&1) at $(command -v "$PY")"
  if [[ -n $missing ]]; then
    if compgen -G ".whl/*.whl" >/dev/null; then
      echo "installing $(find .whl -maxdepth 1 -type f -name '*.whl' | wc -l) carried wheels" \
           "into $SITE (missing: $missing)"
      t0=$SECONDS
      if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
           --target "$SITE" .whl/*.whl; then
        echo "installed in $((SECONDS - t0)) s"
      else
        echo "wheel install failed; the steps that need them will fail and say so"
      fi
      export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
    else
      echo "not importable: $missing, and no .whl/ to install from (benchmarks/gpu_wheels.sh);" \
           "the steps that need them will fail and say so"
    fi
  fi
  export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
  "$PY" benchmarks/gpu_check.py "$@"
} 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
echo "gpu_check.sh: exit status $rc; log $log"
exit "$rc"
