#!/usr/bin/env bash
# The GPU acceptance run of issue 11: install the carried wheels, record the machine, run the
# CUDA tests and the benchmarks, and write at most 8 files into OUT_DIR (for results/gpu/).
#
#   bash scripts/gpu_suite.sh OUT_DIR [--part PARTS] [--budget SECONDS] [--dry-run]
#
# PARTS (comma-separated; each part also installs and records the machine first):
#   tests    pytest -m gpu (tests/gpu)                                   ~6 min
#   bench    bench_gemm.py (ResNet-50 + ViT-B GEMMs) and bench_step.py     ~4 min
#            (ResNet-18 and -50, batch 256, 224 px, bf16, channels-last:
#            dense, fst@native, fst@sparse24; eager (ResNet-50 with a
#            profile of one step), then whole steps as CUDA graphs);
#            bench_gemm again with cuSPARSELt's algorithm search
#   graph    bench_step.py --cuda-graph on ResNet-50 alone                  ~1 min
#   compile  bench_step.py --compile on ResNet-18, then ResNet-50          ~8 min
#            (torch.compile variants)
#   compile50          ResNet-50 --compile alone: dense, fst@native        ~6 min
#   compile50_sparse24 ResNet-50 --compile alone: dense, fst@sparse24      ~6 min
#            (one model's compiles take most of a 10-minute command)
#   vit      issue 23, all in one call of at most 9 minutes (--budget 540):   ~9 min
#            the new kernels' GPU tests (fused Eq. 3, cached cuSPARSELt plans);
#            bench_gemm.py host us per call on ViT-L's MLP GEMMs; bench_vit.py
#            (sparse24: dense vs fst, fst_noir, mvue; bf16; batch 64): ViT-L/16
#            MLP eager + CUDA graphs with the breakdown, ViT-B/16 whole AdamW
#            step compiled (dense, fst), ViT-L/16 and ViT-B/16 whole step as
#            CUDA graphs, one ViT-L/16 block as CUDA graphs
#   all      tests,bench,compile (over 10 minutes: for machines without that limit)
# Default: tests,bench. --budget (default 570 s) bounds the whole run: each part's time limit
# is cut to what is left, and a part with under 30 s left is recorded as skipped (run it
# again alone, e.g. `--part bench`), so the script ends inside a 10-minute command limit.
#
# Files: env.md (versions, nvidia-smi, commit, date), tests.md, bench_gemm.md, bench_gemm.json,
# bench_step.md, bench_step.json (one JSON line per run in both .json files), bench_vit.md,
# bench_vit.json (--part vit: one section / JSON line per bench_vit.py run), errors.md (each
# failed part: exit status and the log's last lines, tracebacks included), suite.json (per
# part: status and seconds). A failing or timed-out part is recorded and the next part still runs; the script
# exits 1 if any part failed.
#
# --dry-run: a CPU check of this script's plumbing (no install, CPU-sized benchmarks); CI runs
# it. Needs .whl/ from scripts/gpu_wheels.sh (carried: it is git-ignored) unless --dry-run.
set -uo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { sed -n '2,32p' "$0"; exit 2; }
INNER=""
[[ "${1:-}" == __fn ]] && { INNER=1; shift; }  # run one function (under `timeout`), below
if [[ -z "$INNER" ]]; then OUT="" PARTS="tests,bench" DRY=0 BUDGET=570; fi  # else: exported
while [[ -z "$INNER" && $# -gt 0 ]]; do
  case "$1" in
    --part) PARTS="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) OUT="$1"; shift ;;
  esac
done
if [[ -z "$INNER" ]]; then
  [[ -n "$OUT" ]] || usage
  [[ "$PARTS" == all ]] && PARTS="tests,bench,compile"
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
  PY=${PYTHON:-python3}
  LOGS=$(mktemp -d /tmp/fst_gpu_suite.XXXXXX)
  # FST_COMMIT first: the GPU machine's copy of the tree may carry a .git of another commit
  COMMIT=${FST_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo "unknown (no .git; set FST_COMMIT)")}
  STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  export OUT PARTS DRY PY LOGS COMMIT STARTED BUDGET
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=offline WANDB_SILENT=true
  export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
  STATUS_JSON="$LOGS/status.jsonl"
  : >"$STATUS_JSON"
  FAILED=0
  DEADLINE=$(( $(date +%s) + BUDGET ))
fi

# run_part NAME TIMEOUT_S CMD...: run CMD with a time limit, log to $LOGS/NAME.log (and the
# terminal), record status and seconds; on failure append the log's tail to errors.md.
run_part() {
  local name=$1 limit=$2; shift 2
  local t0 rc left
  t0=$(date +%s)
  left=$(( DEADLINE - t0 - 10 ))
  if (( left < 30 )); then
    echo "=== [$name] skipped: ${left}s of the ${BUDGET}s budget left"
    echo "{\"part\": \"$name\", \"rc\": null, \"seconds\": 0, \"timed_out\": false, \"skipped\": \"budget\"}" >>"$STATUS_JSON"
    FAILED=1
    write_summary
    return 0
  fi
  (( limit > left )) && limit=$left
  echo "=== [$name] $* (limit ${limit}s)"
  timeout --kill-after=20 "$limit" bash "$SELF" __fn "$@" 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  local secs=$(( $(date +%s) - t0 ))
  echo "{\"part\": \"$name\", \"rc\": $rc, \"seconds\": $secs, \"timed_out\": $([[ $rc == 124 || $rc == 137 ]] && echo true || echo false)}" >>"$STATUS_JSON"
  if [[ $rc != 0 ]]; then
    FAILED=1
    {
      echo "## $name: exit status $rc after ${secs}s$([[ $rc == 124 || $rc == 137 ]] && echo " (timed out at ${limit}s)")"
      echo; echo "command: \`$*\`"; echo; echo '```'
      tail -n 150 "$LOGS/$name.log"
      echo '```'; echo
    } >>"$OUT/errors.md"
  fi
  echo "=== [$name] exit $rc in ${secs}s"
  write_summary
  return 0
}

# suite.json, rewritten after every part (what is there survives an outer kill).
write_summary() {
  "$PY" - "$STATUS_JSON" "$OUT/suite.json" "$COMMIT" "$STARTED" "$PARTS" "$DRY" <<'EOF'
import json, sys
status, out, commit, started, parts, dry = sys.argv[1:]
rows = [json.loads(line) for line in open(status) if line.strip()]
json.dump({"commit": commit, "started_utc": started, "parts": parts, "dry_run": dry == "1",
           "results": rows, "ok": all(r["rc"] == 0 for r in rows)}, open(out, "w"), indent=1)
EOF
}

do_install() {
  if [[ $DRY == 1 ]]; then echo "dry run: nothing installed"; return 0; fi
  if [[ ! -f .whl/requirements.txt ]]; then
    echo "no .whl/requirements.txt: run 'bash scripts/gpu_wheels.sh' on a machine with PyPI and carry .whl" >&2
    return 1
  fi
  "$PY" -m pip install --no-index --find-links .whl --no-cache-dir -q -r .whl/requirements.txt \
    || { echo "resolver install failed; installing every carried wheel without dependencies";
         "$PY" -m pip install --no-index --no-deps --no-cache-dir -q .whl/*.whl || return 1; }
  "$PY" -m pip install --no-deps --no-build-isolation --no-index -q -e . \
    || echo "editable install failed: fst is imported from PYTHONPATH=$ROOT instead"
  "$PY" -c "import hydra, omegaconf, wandb, pycocotools, submitit, fst; print('imports ok:', fst.__file__)"
}

do_env() {
  {
    echo "# GPU suite environment"
    echo
    echo "- date (UTC): $STARTED"
    echo "- commit: $COMMIT"
    echo "- parts: $PARTS$([[ $DRY == 1 ]] && echo ' (DRY RUN on CPU)')"
    echo "- host: $(hostname), $(uname -srm), $(nproc) CPUs"
    echo
    echo '```'
    "$PY" - <<'EOF'
import platform, torch, torchvision
print("python", platform.python_version(), "|", torch.__version__, "| torchvision", torchvision.__version__)
print("cuda build", torch.version.cuda, "| cudnn", torch.backends.cudnn.version())
cslt = getattr(torch.backends, "cusparselt", None)
print("cusparselt", cslt.version() if cslt is not None and cslt.is_available() else None)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, "| capability", f"{p.major}.{p.minor}", "| memory GiB", round(p.total_memory / 2**30, 1), "| SMs", p.multi_processor_count)
else:
    print("gpu: none (CUDA not available)")
try:
    from importlib.metadata import version
    print("packages:", ", ".join(f"{n} {version(n)}" for n in ("hydra-core", "omegaconf", "wandb", "pycocotools", "submitit", "timm", "numpy", "pytest")))
except Exception as e:
    print("packages: ?", e)
EOF
    echo '```'
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
    nvidia-smi 2>&1 || echo "nvidia-smi not available"
    echo '```'
  } >"$OUT/env.md" 2>&1
  cat "$OUT/env.md"
}

do_tests() {
  local args=(-m pytest -m gpu tests/gpu -q -rfEs --tb=short --durations=15 -p no:cacheprovider)
  { echo "# pytest -m gpu"; echo; echo "command: \`$PY ${args[*]}\`"; echo; } >"$OUT/tests.md"
  "$PY" "${args[@]}" 2>&1 | tee -a "$OUT/tests.md"  # streamed: a killed run keeps its output
  return "${PIPESTATUS[0]}"
}

# bench_gemm [extra args]: one bench_gemm.py run, appended to bench_gemm.md / .json (one JSON
# line per run).
do_bench_gemm() {
  local tmp="$LOGS/gemm"
  rm -rf "$tmp"
  if [[ $DRY == 1 ]]; then
    "$PY" scripts/bench_gemm.py --device cpu --dry-run --out "$tmp"  # no cuSPARSELt to search
  else
    "$PY" scripts/bench_gemm.py --device cuda --batch 256 --out "$tmp" "$@"
  fi
  local rc=$?
  if [[ -f "$tmp/bench_gemm.md" ]]; then
    { cat "$tmp/bench_gemm.md"; echo; } >>"$OUT/bench_gemm.md"
    "$PY" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' \
      "$tmp/bench_gemm.json" >>"$OUT/bench_gemm.json"
  fi
  return "$rc"
}

# bench_step MODEL [extra args]: one bench_step.py run, appended to bench_step.md / .json.
do_bench_step() {
  local model=$1; shift
  local tmp="$LOGS/step_$model"
  rm -rf "$tmp"  # a failed run must not re-append the last run's files
  local args=(--model "$model" --strategies dense,fst@native,fst@sparse24 --summary --out "$tmp")
  if [[ $DRY == 1 ]]; then
    args+=(--device cpu --batch 2 --res 32 --steps 1 --warmup 0 --strategies dense,fst@native)
    local extra=()  # CUDA graphs need a GPU: the dry run checks the plumbing without them
    for a in "$@"; do [[ $a == --cuda-graph ]] || extra+=("$a"); done
    set -- "${extra[@]}"
  else
    args+=(--device cuda --batch 256 --res 224 --amp bf16 --channels-last --steps 10 --warmup 3)
  fi
  "$PY" scripts/bench_step.py "${args[@]}" "$@"
  local rc=$?
  if [[ -f "$tmp/bench_step_$model.md" ]]; then
    { echo "## $model $*"; echo; cat "$tmp/bench_step_$model.md"; echo; } >>"$OUT/bench_step.md"
    cat "$tmp/bench_step_$model.json" >>"$OUT/bench_step.json"
  fi
  return "$rc"
}

# vit_tests: the GPU tests of issue 23's kernels (the whole -m gpu suite is `--part tests`).
do_vit_tests() {
  local args=(-m pytest -m gpu tests/gpu/test_eq3_triton_cuda.py tests/gpu/test_cslt_cache_cuda.py
    tests/analysis/test_vit_scripts.py -q -rfEs --tb=short --durations=8 -p no:cacheprovider)
  { echo "# pytest -m gpu (issue 23 kernels)"; echo; echo "command: \`$PY ${args[*]}\`"; echo; } >"$OUT/tests.md"
  "$PY" "${args[@]}" 2>&1 | tee -a "$OUT/tests.md"
  return "${PIPESTATUS[0]}"
}

# bench_vit WHAT MODEL BATCH MODES [extra args]: one bench_vit.py run (sparse24: dense vs fst,
# fst_noir, mvue unless extra args say otherwise), appended to bench_vit.md / .json.
do_bench_vit() {
  local what=$1 model=$2 batch=$3 modes=$4; shift 4
  local tmp="$LOGS/vit_${what}_${model}_${modes//,/_}"
  rm -rf "$tmp"; mkdir -p "$tmp"
  local args=(--what "$what" --backend sparse24 --strategies fst,fst_noir,mvue --out "$tmp")
  if [[ $DRY == 1 ]]; then
    args+=(--device cpu --tiny --modes eager)  # no CUDA graphs on CPU; compiling takes minutes
  else
    args+=(--device cuda --model "$model" --batch "$batch" --modes "$modes" --steps 20 --warmup 5)
  fi
  args+=("$@")
  "$PY" scripts/bench_vit.py "${args[@]}" 2>&1 | tee "$tmp/log"
  local rc=${PIPESTATUS[0]}
  if [[ -f "$tmp/bench_vit_$what.md" ]]; then
    { echo "## $what $model batch $batch, modes $modes"; echo
      echo "command: \`$PY scripts/bench_vit.py ${args[*]}\`"; echo
      cat "$tmp/bench_vit_$what.md"; echo; } >>"$OUT/bench_vit.md"
    tail -n 1 "$tmp/log" >>"$OUT/bench_vit.json"
  fi
  return "$rc"
}

# kill_tree PID: SIGTERM to PID and all its descendants, each by its own id.
kill_tree() {
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$c"; done
  kill -TERM "$1" 2>/dev/null
}

if [[ -n "$INNER" ]]; then
  # `timeout` signals only this shell: take the part's processes (pytest's train.py runs too)
  # down with it, so the next part has the GPU to itself.
  "$@" &
  child=$!
  trap 'kill_tree "$child"; exit 124' TERM
  wait "$child"
  exit $?
fi

IFS=, read -r -a PART_LIST <<<"$PARTS"
run_part install 240 do_install
run_part env 60 do_env
for part in "${PART_LIST[@]}"; do
  case "$part" in
    tests) run_part tests 540 do_tests ;;
    bench)
      run_part bench_gemm 150 do_bench_gemm
      run_part bench_gemm_search 150 do_bench_gemm --search-alg
      run_part bench_step_resnet18 150 do_bench_step resnet18
      run_part bench_step_resnet50 200 do_bench_step resnet50 --profile
      run_part bench_step_resnet18_graph 150 do_bench_step resnet18 --cuda-graph
      run_part bench_step_resnet50_graph 200 do_bench_step resnet50 --cuda-graph
      ;;
    graph) run_part bench_step_resnet50_graph 200 do_bench_step resnet50 --cuda-graph ;;
    compile)
      run_part bench_step_compile_resnet18 240 do_bench_step resnet18 --compile --steps 5
      run_part bench_step_compile 480 do_bench_step resnet50 --compile --steps 5
      ;;
    compile50)
      run_part bench_step_compile50 560 do_bench_step resnet50 --compile --steps 5 \
        --strategies dense,fst@native
      ;;
    compile50_sparse24)
      run_part bench_step_compile50_sparse24 560 do_bench_step resnet50 --compile --steps 5 \
        --strategies dense,fst@sparse24
      ;;
    vit)
      run_part vit_tests 150 do_vit_tests
      run_part bench_gemm_vit 70 do_bench_gemm --models vit_l --batch 64 --search-alg --reps 5
      run_part vit_mlp_large 100 do_bench_vit mlp vit_large_patch16_224 64 eager,graph --breakdown
      run_part vit_step_base_compile 230 do_bench_vit step vit_base_patch16_224 64 compile \
        --strategies fst --steps 10 --warmup 3
      run_part vit_step_large_graph 110 do_bench_vit step vit_large_patch16_224 32 graph \
        --steps 10 --warmup 3 --breakdown
      run_part vit_step_base_graph 70 do_bench_vit step vit_base_patch16_224 64 graph \
        --steps 10 --warmup 3
      run_part vit_block_large 60 do_bench_vit block vit_large_patch16_224 64 graph
      ;;
    *) echo "unknown part '$part' (tests, bench, graph, compile, compile50, compile50_sparse24, vit, all)" >&2; FAILED=1 ;;
  esac
done

write_summary
echo "=== files in $OUT:"; ls -la "$OUT"
n=$(ls -1 "$OUT" | wc -l)
if (( n > 8 )); then echo "WARNING: $n files in $OUT (at most 8 come back)" >&2; fi
rm -rf "$LOGS"
exit "$FAILED"
