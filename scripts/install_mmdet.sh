#!/usr/bin/env bash
# Install MMDetection next to fst: mmcv built from source against the installed torch, then
# mmengine and mmdet from PyPI (the maintained OneDL fork). See docs/mmdet.md.
#
#   bash scripts/install_mmdet.sh          # build (14-27 min on 2 busy cores) or reuse (18 s)
#   FST_MMCV_REBUILD=1 bash scripts/install_mmdet.sh   # ignore the cached wheel
#   FST_MMCV_CFLAGS="-O3" bash scripts/install_mmdet.sh  # host compiler flags (default -g0 -O1)
#
# Why a source build: no mmcv wheel on PyPI matches torch 2.14, and mmcv's setup.py compiles
# with -std=c++17 while torch 2.14's ATen needs C++20 ("#error C++20 or later compatible
# compiler is required to use ATen"; open-mmlab/mmcv#3341), so the sdist is patched to
# -std=c++20 and built without build isolation (an isolated build cannot see torch and silently
# makes a wheel without mmcv.ops). CPU ops always; CUDA ops too when nvcc and a GPU are present.
# The wheel is cached outside the repository, keyed by mmcv, torch and Python versions and the
# ops built, so a second run takes seconds.
set -euo pipefail

MMCV_VERSION="${FST_MMCV_VERSION:-2.3.6}"
MMENGINE_VERSION="${FST_MMENGINE_VERSION:-0.10.12}"
MMDET_VERSION="${FST_MMDET_VERSION:-3.5.1}"
PY="${PYTHON:-python}"

tag=$("$PY" - <<'EOF'
import shutil, sys, torch
cuda = torch.version.cuda is not None and torch.cuda.is_available() and shutil.which("nvcc")
print(f"torch{torch.__version__}-py{sys.version_info[0]}.{sys.version_info[1]}-"
      + (f"cuda{torch.version.cuda}" if cuda else "cpu"))
EOF
)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/fst/wheels/onedl-mmcv${MMCV_VERSION}-${tag}"
echo "install_mmdet: mmcv ${MMCV_VERSION} for ${tag}; wheel cache ${cache}"

# Pin what fst already has, so that pip does not move torch or numpy under it: the OneDL
# packages depend on opencv-python(-headless), whose 4.12 release caps numpy < 2.3 (pip would
# downgrade numpy for it); with numpy pinned and 4.12 excluded pip takes opencv 4.11, which
# accepts the installed numpy. Same exclusions as pyproject's [mmdet] extra.
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$PY" - > "$constraints" <<'EOF'
import importlib.metadata as m
for name in ("torch", "torchvision", "numpy"):
    print(f"{name}=={m.version(name)}")
EOF

wheel=$(ls "$cache"/onedl_mmcv-"${MMCV_VERSION}"-*.whl 2>/dev/null | head -n 1 || true)
if [[ -z "$wheel" || "${FST_MMCV_REBUILD:-0}" == "1" ]]; then
    work=$(mktemp -d)
    echo "install_mmdet: no cached wheel; building mmcv in $work (log: $work/build.log)"
    # Build tools first: preparing the sdist's metadata without isolation already needs a
    # setuptools that reads its PEP 639 licence string (>= 77; Python 3.11's bundled 65 fails).
    "$PY" -m pip install -c "$constraints" ninja "setuptools>=77" wheel packaging
    "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation --no-cache-dir \
        -d "$work" "onedl-mmcv==${MMCV_VERSION}"
    tar -xzf "$work"/onedl_mmcv-"${MMCV_VERSION}".tar.gz -C "$work"
    src="$work/onedl_mmcv-${MMCV_VERSION}"
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    grep -q -- '-std=c++20' "$src/setup.py" || { echo "install_mmdet: C++20 patch did not apply to $src/setup.py" >&2; exit 1; }
    if [[ "$tag" == *cuda* ]]; then export FORCE_CUDA=1; fi
    start=$(date +%s)
    # No debug info and -O1 for the host compiler: a shorter compile and a smaller wheel; the
    # CPU ops (NMS, RoIAlign, ...) are not a detector's hot path. nvcc's flags are unchanged.
    (cd "$src" && CFLAGS="${CFLAGS:-} ${FST_MMCV_CFLAGS:--g0 -O1}" MMCV_WITH_OPS=1 \
        MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "$PY" -m pip wheel --no-build-isolation --no-deps --no-cache-dir -v -w "$work/dist" .) \
        > "$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; echo "install_mmdet: mmcv build failed; full log $work/build.log" >&2; exit 1; }
    echo "install_mmdet: mmcv built in $(( $(date +%s) - start )) s"
    mkdir -p "$cache"
    cp "$work"/dist/onedl_mmcv-*.whl "$cache"/
    cp "$work/build.log" "$cache/build.log"
    rm -rf "$work"
    wheel=$(ls "$cache"/onedl_mmcv-"${MMCV_VERSION}"-*.whl | head -n 1)
else
    echo "install_mmdet: using cached $wheel"
fi

"$PY" -m pip install -c "$constraints" --no-deps --force-reinstall "$wheel"
"$PY" -m pip install -c "$constraints" \
    "onedl-mmcv==${MMCV_VERSION}" "onedl-mmengine==${MMENGINE_VERSION}" \
    "onedl-mmdetection==${MMDET_VERSION}" "opencv-python!=4.12.*" "opencv-python-headless!=4.12.*" \
    --find-links "$cache"

"$PY" - <<'EOF'
import torch
import mmcv, mmdet, mmengine
from mmcv.ops import RoIAlign, nms

boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
_, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
assert keep.tolist() == [0, 2], keep
out = RoIAlign((2, 2), 1.0, 0)(torch.ones(1, 1, 8, 8), torch.tensor([[0.0, 0, 0, 4, 4]]))
assert out.shape == (1, 1, 2, 2), out.shape
print(f"install_mmdet: ok: mmcv {mmcv.__version__} (mmcv.ops loads), mmengine "
      f"{mmengine.__version__}, mmdet {mmdet.__version__}, torch {torch.__version__}")
EOF
