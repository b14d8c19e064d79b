#!/usr/bin/env bash
# Build one peer's own virtual environment: .venvs/peer-<name> at the repo root.
#
#   benchmarks/peers/build_venv.sh <rejax|brax|sb3|playground> [--force]
#
# Installs benchmarks/peers/<name>/requirements.txt (exact pins) with the plain `pip` of a
# fresh `python3 -m venv`, so it honours this machine's pip config (mirrors, find-links,
# the torch cap). Idempotent: a marker file in the venv records a hash of the requirements
# file and the Python version; when it matches, nothing is done. When it does not (or with
# --force), the venv is removed and rebuilt from scratch.
# These venvs are never a dependency of ppox; .venvs/ is git-ignored (root .gitignore).
# Env: PYTHON (default python3) picks the interpreter the venv is made from.
set -euo pipefail

usage() { echo "usage: $0 <rejax|brax|sb3|playground> [--force]" >&2; exit 2; }
[ $# -ge 1 ] || usage
name=$1
force=0
[ "${2:-}" = "--force" ] && force=1
case "$name" in
  rejax|brax|sb3|playground) ;;
  *) usage ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
req="$here/$name/requirements.txt"
venv="$root/.venvs/peer-$name"
marker="$venv/.peer-requirements.sha256"
python=${PYTHON:-python3}

[ -f "$req" ] || { echo "missing $req" >&2; exit 1; }
want=$( { "$python" -c 'import sys; print(sys.version)'; cat "$req"; } | sha256sum | cut -d' ' -f1)

if [ "$force" = 0 ] && [ -x "$venv/bin/python" ] && [ -f "$marker" ] \
   && [ "$(cat "$marker")" = "$want" ]; then
  echo "peer-$name: up to date ($venv)"
  exit 0
fi

echo "peer-$name: building $venv from $req"
rm -rf "$venv"
mkdir -p "$root/.venvs"
"$python" -m venv "$venv"
# plain pip: the machine's pip config (index mirrors, find-links, constraints) applies
"$venv/bin/pip" install --no-input -r "$req"
"$venv/bin/pip" check || echo "peer-$name: warning: pip check reported conflicts" >&2

# smoke import, so a broken set fails here rather than at benchmark time
case "$name" in
  rejax) "$venv/bin/python" -c 'import rejax, gymnax, jax; print("rejax", jax.__version__)' ;;
  brax)  "$venv/bin/python" -c 'import brax, jax; from brax.training.agents.ppo import train; print("brax", brax.__version__, "jax", jax.__version__)' 2>&1 | grep -v -i warp ;;
  playground) "$venv/bin/python" -c 'import jax, brax, mujoco_playground; from brax.training.agents.ppo import train; from mujoco_playground.config import dm_control_suite_params; print("playground with brax", brax.__version__, "jax", jax.__version__)' 2>&1 | grep -v -i warp ;;
  sb3)   "$venv/bin/python" -c 'import stable_baselines3, torch, gymnasium; assert "+cpu" in torch.__version__ or not torch.cuda.is_available(); print("sb3", stable_baselines3.__version__, "torch", torch.__version__)' ;;
esac

echo "$want" > "$marker"
echo "peer-$name: built"
