#!/usr/bin/env bash
# The GPU suite: GPU checks of utils and Ray, then every notebook under nbval, on CUDA.
#
#   scripts/test_gpu.sh              (what `make test-gpu` runs)
#   GPU_TEST_IMAGES=256 scripts/test_gpu.sh
#
# Exit status: 0 the suite passed on a GPU; 1 (or pytest's code) something failed;
# 77 there is no CUDA GPU for torch here, so NOTHING was run. 77 is the "skipped" code of
# automake and meson test harnesses: they report it as SKIP, and make or CI, which know no
# skip, see a failure. Either way a CPU-only machine never reports the GPU suite as passed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
IMAGES="${GPU_TEST_IMAGES:-64}"
SKIPPED=77

if ! gpu_report="$("$PYTHON" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    print(f"torch {torch.__version__} ({build}) sees no CUDA device")
    sys.exit(1)
names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
print(f"{torch.cuda.device_count()} CUDA GPU(s): {names} (torch {torch.__version__}, CUDA {torch.version.cuda})")
PY
)"; then
  echo "No CUDA GPU visible to torch: the GPU suite needs one; nothing was run."
  echo "  (${gpu_report:-torch could not be imported with $PYTHON})"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "  nvidia-smi does list a GPU: install a CUDA build of torch (see requirements.txt)."
  fi
  exit "$SKIPPED"
fi

echo "GPU suite on $gpu_report"
echo "Running tests/test_gpu_suite.py, then every notebook with COURSE_DEVICE=cuda COURSE_NUM_IMAGES=$IMAGES"
# RAY_ADDRESS is dropped: the suite measures this machine's GPU(s), not a cluster's.
env -u RAY_ADDRESS COURSE_DEVICE=cuda COURSE_NUM_IMAGES="$IMAGES" \
  "$PYTHON" -m pytest -p no:cacheprovider tests/test_gpu_suite.py notebooks --nbval-lax "$@"
