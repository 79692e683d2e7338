#!/usr/bin/env bash
# Build mit-han-lab's Block-Sparse-Attention (the `block_sparse_attn` package) for one GPU architecture, compiling
# only the kernels the BLADE backend calls: non-causal forward and backward, the given dtypes and head dims.
#
#   scripts/build_block_sparse_attn.sh SRC CUTLASS [--arch 90] [--dtypes "bf16 fp16"] [--head-dims "64 128"]
#                                      [--jobs N] [--target DIR] [--wheel-dir DIR] [--std c++17] [--keep]
#                                      [--all-switches] [--prepare-only]
#
# SRC      a checkout of https://github.com/mit-han-lab/Block-Sparse-Attention (its setup.py, csrc/, block_sparse_attn/)
# CUTLASS  a checkout of https://github.com/NVIDIA/cutlass at the commit SRC pins as its csrc/cutlass submodule
#          (the folder holding include/, or include/ itself)
# --arch   compute capability without the dot (H100/H200: 90, A100: 80, RTX 4090: 89); default: the first of
#          TORCH_CUDA_ARCH_LIST, else the visible GPU's. Several archs: "80 90".
# --target install into DIR (put it on PYTHONPATH) instead of the active Python's site-packages
# --all-switches  keep the kernel variants for dropout, sliding windows, returned softmax and exact streaming
#                 (by default the copy's launch templates instantiate only the variant BLADE reaches, and raise a
#                 RuntimeError on the others: a build several times faster, the same kernels for BLADE's calls)
# --prepare-only  write the temporary build folder, print its path and stop (implies --keep)
#
# Nothing is downloaded. The source folders are read only: the build runs in a temporary folder holding a copy of
# the CUDA sources, its own setup.py (our source list and flags) and a generated file that makes every kernel left
# out of the build raise a clear error instead of failing to link. Needs nvcc, ninja and a CUDA PyTorch.
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ $# -ge 2 ]] || usage
SRC=$(cd "$1" && pwd)
CUTLASS=$(cd "$2" && pwd)
shift 2
ARCH="" DTYPES="bf16 fp16" HDIMS="64 128" JOBS=$(nproc) TARGET="" WHEEL_DIR="" STD="c++17" KEEP=0 PREPARE_ONLY=0 TRIM=1
PYTHON=${PYTHON:-python3}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --arch) ARCH=$2; shift 2 ;;
    --dtypes) DTYPES=$2; shift 2 ;;
    --head-dims) HDIMS=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    --wheel-dir) WHEEL_DIR=$2; shift 2 ;;
    --std) STD=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --prepare-only) PREPARE_ONLY=1; KEEP=1; shift ;;
    --all-switches) TRIM=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument '$1'" >&2; usage ;;
  esac
done

[[ -f "$SRC/csrc/block_sparse_attn/flash_api.cpp" && -f "$SRC/block_sparse_attn/__init__.py" ]] || {
  echo "error: $SRC is not a Block-Sparse-Attention checkout (no csrc/block_sparse_attn/flash_api.cpp)" >&2; exit 1; }
if [[ -d "$CUTLASS/include/cute" ]]; then CUTLASS_INC="$CUTLASS/include"
elif [[ -d "$CUTLASS/cute" ]]; then CUTLASS_INC="$CUTLASS"
else echo "error: no cute/ headers under $CUTLASS or $CUTLASS/include (pass the cutlass checkout)" >&2; exit 1; fi
for d in $DTYPES; do [[ $d == bf16 || $d == fp16 ]] || { echo "error: --dtypes takes bf16 and/or fp16, not '$d'" >&2; exit 1; }; done
for h in $HDIMS; do [[ $h == 32 || $h == 64 || $h == 128 ]] || { echo "error: --head-dims takes 32, 64, 128, not '$h'" >&2; exit 1; }; done
command -v nvcc >/dev/null || { echo "error: nvcc not on PATH (install the CUDA toolkit or set PATH)" >&2; exit 1; }
command -v ninja >/dev/null || "$PYTHON" -c "import ninja" 2>/dev/null || {
  echo "error: ninja not found (pip install ninja); without it the build is serial" >&2; exit 1; }
if [[ -z "$ARCH" ]]; then
  if [[ -n "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
    ARCH=$(echo "$TORCH_CUDA_ARCH_LIST" | tr ';, ' '\n\n\n' | grep -v '^$' | sed 's/+PTX//; s/\.//' | tr '\n' ' ')
  else
    ARCH=$("$PYTHON" -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}{c[1]}')" 2>/dev/null) || {
      echo "error: no --arch given, TORCH_CUDA_ARCH_LIST unset and no GPU visible; pass --arch 90 (H100)" >&2; exit 1; }
  fi
fi

T0=$(date +%s.%N)
STAGE_T=$T0
stage() {  # print how long the stage that just ended took
  local now; now=$(date +%s.%N)
  awk -v a="$now" -v b="$STAGE_T" -v n="$1" 'BEGIN { printf "[build_block_sparse_attn] %-28s %7.1f s\n", n, a - b }'
  STAGE_T=$now
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bsa-build.XXXXXX")
[[ $KEEP == 1 ]] || trap 'rm -rf "$WORK"' EXIT
echo "[build_block_sparse_attn] source $SRC (commit $(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown))"
echo "[build_block_sparse_attn] arch $ARCH, dtypes $DTYPES, head dims $HDIMS, jobs $JOBS, -std=$STD, work $WORK"
echo "[build_block_sparse_attn] $(nvcc --version | tail -n 2 | head -n 1); torch $("$PYTHON" -c 'import torch; print(torch.__version__, torch.version.cuda)')"

# The temporary project: the package's Python files, a copy of the CUDA sources, our setup.py and stub file.
cp -r "$SRC/block_sparse_attn" "$WORK/block_sparse_attn"
find "$WORK/block_sparse_attn" -name '__pycache__' -prune -exec rm -rf {} +
mkdir -p "$WORK/csrc" && cp -r "$SRC/csrc/block_sparse_attn" "$WORK/csrc/block_sparse_attn"
cp "$SRC/LICENSE" "$WORK/LICENSE" 2>/dev/null || true
mkdir -p "$WORK/generated"
"$PYTHON" - "$WORK" "$DTYPES" "$HDIMS" <<'PY'
import itertools
import sys
from pathlib import Path

work, dtypes, hdims = Path(sys.argv[1]), sys.argv[2].split(), [int(h) for h in sys.argv[3].split()]
ctype = {"fp16": "cutlass::half_t", "bf16": "cutlass::bfloat16_t"}
built, stubs = [], []
# every (dtype, head dim, causal) the library's dispatch switches reach: FP16_SWITCH x HEADDIM_SWITCH x BOOL_SWITCH
for kind, dt, hd, causal in itertools.product(("fwd", "bwd"), ("fp16", "bf16"), (32, 64, 128), (False, True)):
    if dt in dtypes and hd in hdims and not causal:
        built.append(f"csrc/block_sparse_attn/src/flash_{kind}_block_hdim{hd}_{dt}_sm80.cu")
        continue
    params = "Flash_fwd_params" if kind == "fwd" else "Flash_bwd_params"
    what = "forward" if kind == "fwd" else "backward"
    stubs.append(
        f"template<> void run_mha_{kind}_block_<{ctype[dt]}, {hd}, {str(causal).lower()}>({params} &, cudaStream_t) {{\n"
        f'    TORCH_CHECK(false, "block_sparse_attn was built without its {what} kernel for {dt}, head_dim {hd}, '
        f'causal={str(causal).lower()}; rebuild it with that dtype and head dim");\n}}\n'
    )
(work / "generated" / "left_out_kernels.cu").write_text(
    "// Written by scripts/build_block_sparse_attn.sh: the kernels left out of this build raise instead of linking.\n"
    '#include "namespace_config.h"\n#include "flash.h"\n#include <cutlass/numeric_types.h>\n'
    "#include <c10/util/Exception.h>\n\nnamespace FLASH_NAMESPACE {\n\n" + "\n".join(stubs) + "\n}\n"
)
(work / "sources.txt").write_text(
    "\n".join(["csrc/block_sparse_attn/flash_api.cpp", *built, "generated/left_out_kernels.cu"]) + "\n"
)
for name in built:
    print(f"[build_block_sparse_attn] kernel {name}")
print(f"[build_block_sparse_attn] {len(stubs)} dispatch targets left out (they raise a RuntimeError if reached)")
PY

if [[ $TRIM == 1 ]]; then "$PYTHON" - "$WORK/csrc/block_sparse_attn/src" <<'PY'
# Runtime switches whose other branch the BLADE backend never reaches (no dropout, no window, no returned softmax,
# no exact streaming; the library's varlen entry points always pass cu_seqlens, so is_even_MN is always false):
# instantiate the reached branch only and raise if the other one is asked for.
import re
import sys
from pathlib import Path

src = Path(sys.argv[1])
names = "Is_dropout|Is_local|ReturnSoftmaxConst|Is_exact_streaming|IsEvenMNConst"
expected = {"flash_fwd_launch_template.h": 7, "flash_bwd_launch_template.h": 5}
for name, count in expected.items():
    path = src / name
    text, n = re.subn(rf"BOOL_SWITCH\(([^\n]*?), ({names}), \[&\]", r"BSA_FALSE_SWITCH(\1, \2, [&]", path.read_text())
    if n != count:
        sys.exit(f"error: {name}: {n} switches matched, expected {count}; this source is not the commit the "
                 "script was written for (49d6c39): rerun with --all-switches")
    path.write_text(text)
with open(src / "static_switch.h", "a") as fh:
    fh.write(
        "\n// Added by scripts/build_block_sparse_attn.sh: only the false branch is compiled.\n"
        "#define BSA_FALSE_SWITCH(COND, CONST_NAME, ...)                                          \\\n"
        "  [&] {                                                                                   \\\n"
        "    TORCH_CHECK(!(COND), \"block_sparse_attn was built without the \" #CONST_NAME           \\\n"
        "                \" kernel variants; rebuild it with --all-switches\");                    \\\n"
        "    constexpr static bool CONST_NAME = false;                                             \\\n"
        "    return __VA_ARGS__();                                                                 \\\n"
        "  }()\n"
    )
print("[build_block_sparse_attn] launch templates: only the branch BLADE reaches of " + names.replace("|", ", "))
PY
fi

cat > "$WORK/setup.py" <<'PY'
import ast
import os
import re
from pathlib import Path

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CUDAExtension

here = Path(__file__).resolve().parent
init = (here / "block_sparse_attn" / "__init__.py").read_text()
version = ast.literal_eval(re.search(r"^__version__\s*=\s*(.*)$", init, re.MULTILINE).group(1))
std = "-std=" + os.environ["BSA_STD"]
gencode = []
for arch in os.environ["BSA_ARCH"].split():
    gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
nvcc = [
    "-O3", std, "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__", "-U__CUDA_NO_HALF2_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math",
    *gencode,
]
setup(
    name="block_sparse_attn",
    version=version,
    packages=["block_sparse_attn", "block_sparse_attn.utils"],
    ext_modules=[
        CUDAExtension(
            name="block_sparse_attn_cuda",
            sources=(here / "sources.txt").read_text().split(),
            extra_compile_args={"cxx": ["-O3", std], "nvcc": nvcc},
            include_dirs=[
                here / "csrc" / "block_sparse_attn",
                here / "csrc" / "block_sparse_attn" / "src",
                Path(os.environ["BSA_CUTLASS_INCLUDE"]),
            ],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
    install_requires=["torch", "einops"],
)
PY
stage "prepare"
if [[ $PREPARE_ONLY == 1 ]]; then echo "[build_block_sparse_attn] prepared $WORK"; exit 0; fi

cd "$WORK"
export BSA_ARCH="$ARCH" BSA_STD="$STD" BSA_CUTLASS_INCLUDE="$CUTLASS_INC" MAX_JOBS="$JOBS"
"$PYTHON" setup.py -q build_ext > "$WORK/build_ext.log" 2>&1 || {
  grep -n -m 40 -B 2 -A 6 'error' "$WORK/build_ext.log" >&2 || tail -n 60 "$WORK/build_ext.log" >&2
  echo "error: compilation failed; full log: $WORK/build_ext.log (kept)" >&2; trap - EXIT; exit 1; }
stage "compile (ninja, $JOBS jobs)"
NINJA_LOG=$(find "$WORK/build" -name .ninja_log | head -n 1)
if [[ -n "$NINJA_LOG" ]]; then  # per-file compile times, slowest first
  awk -F'\t' '!/^#/ { printf "[build_block_sparse_attn]   %7.1f s  %s\n", ($2 - $1) / 1000, $4 }' "$NINJA_LOG" \
    | sort -k2 -rn | sed "s#$WORK/##"
fi
"$PYTHON" setup.py -q bdist_wheel -d "$WORK/dist" > "$WORK/bdist_wheel.log" 2>&1 || {
  tail -n 40 "$WORK/bdist_wheel.log" >&2; echo "error: packaging the wheel failed" >&2; exit 1; }
WHEEL=$(ls "$WORK"/dist/*.whl)
stage "wheel"
echo "[build_block_sparse_attn] wheel $(basename "$WHEEL") ($(du -h "$WHEEL" | cut -f1))"
if [[ -n "$WHEEL_DIR" ]]; then mkdir -p "$WHEEL_DIR" && cp "$WHEEL" "$WHEEL_DIR/"; fi

cd /
if [[ -n "$TARGET" ]]; then
  "$PYTHON" -m pip install -q --no-deps --no-index --no-compile --upgrade --target "$TARGET" "$WHEEL"
  export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"
else
  "$PYTHON" -m pip install -q --no-deps --no-index --no-compile --force-reinstall "$WHEEL"
fi
stage "install"
"$PYTHON" -c "import block_sparse_attn, block_sparse_attn_cuda; print('[build_block_sparse_attn] import ok:', \
block_sparse_attn.__version__, block_sparse_attn_cuda.__file__)"
stage "import check"
awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { printf "[build_block_sparse_attn] %-28s %7.1f s\n", "total", a - b }'
