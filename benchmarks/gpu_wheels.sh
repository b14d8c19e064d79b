#!/usr/bin/env bash
# Downloads into .whl/ the wheels that the GPU machine (the device tool's nvidia-h200 kind:
# Python 3.12, x86-64, jax 0.11.2, no network) lacks for what benchmarks/gpu_check.sh runs.
#
#   bash benchmarks/gpu_wheels.sh                  # gymnax, brax, mujoco(-mjx), tyro, playground
#   bash benchmarks/gpu_wheels.sh --no-playground  # without playground (and ml-collections'
#                                                  # only other user is brax, so it stays)
#
# The list is the dependency closure (Requires-Dist, extras left out, markers for Python
# 3.12 on Linux) of ppox's pins in pyproject.toml and of its `playground` extra, less what
# that machine's image already holds (/work/.library/device/KINDS.md, "Python packages
# already there": jax, jaxlib, flax, optax, chex, orbax-checkpoint, numpy, scipy, absl-py,
# etils, lxml, tqdm, pyyaml, pillow, rich, matplotlib, seaborn, imageio, protobuf, ...).
# Versions are the ones pyproject.toml pins and the ones the pins resolved to in .venv.
# Left out on purpose:
#   jax, jaxlib      the image's CUDA build (0.11.2) is the one to measure
#   warp-lang        ~100 MB wheel; Playground's optional MuJoCo Warp back-end, which ppox
#                    does not use (impl=jax is its default); without it playground prints
#                    "Failed to import warp" and works
#   mediapy          and its IPython chain: Playground's videos only; not imported to build
#                    or step an env
# .whl/ is ignored (.gitignore); the device tool carries it with carry: [".whl"].
set -euo pipefail

cd "$(dirname "$0")/.."
playground=1
for arg in "$@"; do
  case "$arg" in
    --no-playground) playground=0 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (--no-playground)" >&2; exit 2 ;;
  esac
done

WHEELS=(
  # gymnax (CartPole) and what it needs beyond the image
  gymnax==1.0.1 gymnasium==1.3.0 farama-notifications==0.0.6
  # brax (brax/ant) and its needs
  brax==0.14.2 jaxopt==0.8.5 ml-collections==1.1.0 tensorboardX==2.6.5 trimesh==5.2.0
  flask==3.1.3 flask-cors==6.0.5 blinker==1.9.0 itsdangerous==2.2.0
  # MuJoCo and MJX (brax's and Playground's physics)
  mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 mujoco-mjx==3.17.0
  glfw==2.11.0 PyOpenGL==3.1.10 websockets==17.4
  # ppox's own pins that the image lacks
  tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 tomli-w==1.2.0
)
if [[ $playground == 1 ]]; then
  WHEELS+=(playground==0.2.0)
fi

PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] && PY=${PYTHON:-.venv/bin/python}
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$tag")
done

mkdir -p .whl
# A wheel of another version left from an earlier list would stop the install there.
keep=()
for spec in "${WHEELS[@]}"; do
  keep+=("$(echo "${spec%%==*}_${spec##*==}" | tr 'A-Z-' 'a-z_')")
done
for f in .whl/*.whl; do
  [[ -e $f ]] || continue
  base=$(basename "$f" | tr 'A-Z-' 'a-z_')
  ok=0
  for k in "${keep[@]}"; do
    [[ $base == "$k"_* ]] && ok=1
  done
  if [[ $ok == 0 ]]; then
    echo "removing $f (not in the list)"
    rm -f "$f"
  fi
done

"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

count=$(find .whl -maxdepth 1 -type f -name '*.whl' | wc -l)
echo "${count} wheels in .whl/ ($(du -sh .whl | cut -f1)):"
ls -1 .whl
if [[ $count != "${#WHEELS[@]}" ]]; then
  echo "expected ${#WHEELS[@]} wheels, found ${count}" >&2
  exit 1
fi
