#!/usr/bin/env bash
# Download into .whl/ (git-ignored) every wheel fst needs on the GPU test machine beyond what
# that machine already has, for CPython 3.12 on manylinux x86_64.
#
#   bash scripts/gpu_wheels.sh            # download (about 30 MB), then check the set
#   bash scripts/gpu_wheels.sh --check    # only check an existing .whl/ (needs python3.12 here)
#
# The GPU machine (see scripts/gpu_suite.sh) has CPython 3.12, torch 2.11, torchvision 0.26,
# timm, Triton, cuSPARSELt, numpy, scipy, pytest, scikit-learn, scikit-image, matplotlib,
# tqdm, pillow, pyyaml, ... but reaches no package registry. What it lacks is Hydra and
# OmegaConf (with the antlr4 runtime, which PyPI has only as an sdist: its wheel is built
# here), W&B, pycocotools, submitit and the Hydra submitit launcher, and their own needs.
# Versions are pinned to the ones our CPU machines and CI run (pip list there), so the GPU
# run tests the same stack. Big packages the GPU machine has (numpy, torch, nvidia-*, ...)
# are left out: everything under .whl/ travels with the working tree (64 MiB limit).
#
# The check installs the set, offline, into a fresh python3.12 virtual environment (numpy
# from PyPI first, standing in for the GPU machine's own) and imports every package.
set -euo pipefail
cd "$(dirname "$0")/.."

WHL=.whl
PY312=${PY312:-}
# Exactly the versions of our CPU/CI environment.
PINS=(
  "hydra-core==1.3.8"
  "omegaconf==2.3.1"
  "antlr4-python3-runtime==4.9.3"
  "wandb==0.31.0"
  "pycocotools==2.0.11"
  "submitit==1.5.4"
  "hydra-submitit-launcher==1.2.0"
  # build backend for `pip install -e .` offline (pyproject: setuptools>=68)
  "setuptools>=68"
  "wheel"
)
# Present on the GPU machine and big: never carried (regex on the wheel's file name).
DROP='^(numpy|torch|torchvision|triton|timm|nvidia_|scipy|pillow|matplotlib|scikit_)'
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64
  manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

find_py312() {
  if [[ -n "$PY312" ]]; then echo "$PY312"; return; fi
  for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      command -v "$c"; return
    fi
  done
}

download() {
  rm -rf "$WHL" && mkdir -p "$WHL"
  echo "== building antlr4-python3-runtime 4.9.3 (sdist only on PyPI) into $WHL"
  python3 -m pip wheel --quiet --no-deps -w "$WHL" "antlr4-python3-runtime==4.9.3"
  local plat=()
  for p in "${PLATFORMS[@]}"; do plat+=(--platform "$p"); done
  echo "== downloading ${PINS[*]} and their dependencies for cp312 manylinux x86_64"
  # --find-links: the antlr wheel just built satisfies omegaconf's pin.
  python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none "${plat[@]}" \
    --find-links "$WHL" -d "$WHL" "${PINS[@]}"
  echo "== dropping what the GPU machine already has: $DROP"
  for f in "$WHL"/*.whl; do
    if basename "$f" | grep -Eiq "$DROP"; then echo "   drop $(basename "$f")"; rm -f "$f"; fi
  done
  # The pins, for scripts/gpu_suite.sh (pip install --no-index -r .whl/requirements.txt).
  printf '%s\n' "${PINS[@]}" >"$WHL/requirements.txt"
  # Two versions of one package stop an offline install: there must be one of each.
  local dups
  dups=$(for f in "$WHL"/*.whl; do basename "$f" | cut -d- -f1 | tr 'A-Z-' 'a-z_'; done | sort | uniq -d)
  if [[ -n "$dups" ]]; then echo "ERROR: several versions of: $dups" >&2; exit 1; fi
}

report() {
  local n size
  n=$(ls "$WHL"/*.whl | wc -l)
  size=$(du -sm "$WHL" | cut -f1)
  echo "== $WHL: $n wheels, ${size} MiB"
  ls -1 "$WHL"
  if (( size > 48 )); then
    echo "ERROR: $WHL is ${size} MiB; the working tree carried to the GPU machine must stay under 64 MiB" >&2
    exit 1
  fi
}

check() {
  local py
  py=$(find_py312)
  if [[ -z "$py" ]]; then
    echo "== no python3.12 here: checking the resolution only (pip --dry-run)"
    python3 -m pip install --dry-run --quiet --ignore-installed --no-index --find-links "$WHL" \
      --only-binary=:all: --python-version 3.12 --implementation cp --target /tmp/fst_whl_dry \
      --no-deps "$WHL"/*.whl
    return
  fi
  local venv
  venv=$(mktemp -d /tmp/fst_whl_check.XXXXXX)
  echo "== checking with $py in a fresh venv $venv"
  "$py" -m venv "$venv"
  # numpy stands in for the GPU machine's own (pycocotools needs it); nothing else online.
  "$venv/bin/python" -m pip install --quiet --only-binary=:all: numpy
  "$venv/bin/python" -m pip install --quiet --no-index --find-links "$WHL" -r "$WHL/requirements.txt"
  "$venv/bin/python" - <<'EOF'
import importlib
mods = ["hydra", "omegaconf", "antlr4", "wandb", "pycocotools.coco", "pycocotools.cocoeval",
        "submitit", "hydra_plugins.hydra_submitit_launcher.submitit_launcher"]
for m in mods:
    mod = importlib.import_module(m)
    print(f"   import {m}: ok ({getattr(mod, '__version__', '')})")
EOF
  rm -rf "$venv"
  echo "== wheel set complete"
}

if [[ "${1:-}" != "--check" ]]; then
  download
fi
report
check
