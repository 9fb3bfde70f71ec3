#!/usr/bin/env bash
# The CPU-dependent code paths this machine can run besides its own (scripts/test.sh calls this
# after the full suite; it needs .venv from scripts/setup.sh):
#
# 1. the int8 operator tests once more with each other int8 GEMM kernel this CPU can execute
#    (REFRT_INT8_KERNEL=amx|vnni|avx2|portable; the default one ran in the full suite);
# 2. the kernel and int8 operator tests with Numba compiling for the CPU classes below this one:
#    Haswell (AVX2, no AVX-512: the avx2 kernel, float32 MatMul on the BLAS) where this CPU has
#    more than AVX2, and baseline x86-64 (no AVX2: the portable kernels) always. NUMBA_CPU_FEATURES
#    is set, empty, beside NUMBA_CPU_NAME: with the name alone Numba keeps this CPU's features and
#    still emits AVX-512 code; empty, LLVM takes the named CPU's own features.
#
# onnxruntime's side of a saturating (AVX2) CPU runs under qemu-x86_64 -cpu Haswell inside the
# suite itself where this CPU's onnxruntime is exact (tests/ort_helpers.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
INT8_TESTS=(tests/ops/test_quant.py tests/ops/test_quant_vs_ort.py tests/ops/test_contrib_quant.py
            tests/ops/test_contrib_quant_vs_ort.py tests/core/test_fusion.py tests/core/test_host.py
            tests/quantization/test_quantized_models_vs_ort.py)
KERNEL_TESTS=(tests/kernels tests/ops/test_quant.py tests/core/test_fusion.py tests/core/test_host.py)

read -r CLASS DEFAULT OTHERS <<< "$($PY -c '
from refrt import host
h = host.info()
print(h.cpu_class.replace(" ", "_"), h.int8_kernel, " ".join(k for k in h.int8_kernels if k != h.int8_kernel))')"
echo "CPU class ${CLASS//_/ }: the full suite ran with the ${DEFAULT} int8 kernel"

status=0
for kernel in $OTHERS; do
    echo "== int8 operators with REFRT_INT8_KERNEL=${kernel}"
    REFRT_INT8_KERNEL="$kernel" $PY -m pytest -q -p no:cacheprovider "${INT8_TESTS[@]}" || status=1
done
if [ "$CLASS" != "AVX2" ] && [ "$CLASS" != "x86-64_without_AVX2" ] \
        && $PY -c 'import sys; from refrt.kernels import cpu; sys.exit("avx2" not in cpu.features()[1])'; then
    echo "== kernels compiled for Haswell (NUMBA_CPU_NAME=haswell: AVX2 without AVX-512)"
    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= $PY -m pytest -q -p no:cacheprovider "${KERNEL_TESTS[@]}" || status=1
fi
if [ "$(uname -m)" = x86_64 ]; then
    echo "== kernels compiled for baseline x86-64 (NUMBA_CPU_NAME=x86-64: no AVX2, the portable kernels)"
    NUMBA_CPU_NAME=x86-64 NUMBA_CPU_FEATURES= $PY -m pytest -q -p no:cacheprovider "${KERNEL_TESTS[@]}" || status=1
fi
exit $status
