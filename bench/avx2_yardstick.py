"""refrt's AVX2 int8 GEMM on this CPU, compiled for a Haswell, against fixed yardsticks.

    python -m bench.avx2_yardstick

The AVX2-only CPUs refrt's users have are not always at hand. This section measures, on the
machine it runs on, what an AVX2-only CPU would run, against two yardsticks of that same code
class measured in the same process:

* **refrt avx2**: ``gemm_int8`` with the AVX2 kernel forced (``REFRT_INT8_KERNEL=avx2``) and
  Numba generating Haswell code (``NUMBA_CPU_NAME=haswell``, ``NUMBA_CPU_FEATURES`` empty: AVX2
  and FMA, no AVX-512), B packed
  once outside the timing, u8 x s8 (A zero point 131, B symmetric), full-range operands;
* **OpenBLAS Haswell sgemm**: NumPy's float32 ``a @ b`` with OpenBLAS held to its Haswell kernels
  (``OPENBLAS_CORETYPE=Haswell``) -- GFLOPS, the float32 speed of an AVX2 CPU of this clock;
* **vpmaddwd dot**: an int16 dot product over 2 x 4 KiB (L1-resident) compiled for Haswell, which
  LLVM turns into ``vpmaddwd`` + ``vpaddd`` with two loads each: the int16 multiply-add rate of
  the core when every product needs its operands loaded (a GEMM reuses registers and can beat it).

All three run in one child process with those variables set (the parent's NumPy and Numba are
already initialised), on 1 and 2 threads. The machine code of the forced kernel is inspected to
show it uses ymm registers only.

Targets, from the AVX2-only AMD EPYC (znver3) of issue 15 (medians there): onnxruntime's exact
u8 x s8 path reached 160-270 GOPS at MiniLM shapes where OpenBLAS float32 reached 125-130 GFLOPS,
i.e. 1.2-2.1x OpenBLAS's sgemm on the same CPU; refrt's AVX2 kernel reached 40-75 GOPS there
(0.3-0.6x). The ratio "refrt avx2 / OpenBLAS Haswell sgemm" below is the number to compare with
those, CPU for CPU: >= 1.2x would match onnxruntime's exact path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import bench  # noqa: F401  (thread-pool wait policies, before NumPy is imported)

# isort: split
import numpy as np

from bench import common as C

# MiniLM (hidden 384, intermediate 1536) and BERT-base (768, 3072) products
SHAPES = [(384, 384), (384, 1536), (1536, 384), (768, 3072)]
MS = [1, 32, 96, 128, 512]
# NUMBA_CPU_FEATURES empty: LLVM takes the named CPU's features (with the name alone Numba keeps
# this CPU's and emits AVX-512 code)
CHILD_ENV = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "", "REFRT_INT8_KERNEL": "avx2",
             "OPENBLAS_CORETYPE": "Haswell"}
A_ZP = 131
DOT_N = 2048          # int16 elements per operand of the dot: 2 x 4 KiB


def _dot_kernel():
    from numba import njit

    @njit(cache=False)
    def dot_i16(a, b, reps):
        total = np.int32(0)
        for _ in range(reps):
            acc = np.int32(0)
            for i in range(a.shape[0]):
                acc = np.int32(acc + np.int32(a[i]) * np.int32(b[i]))
            total = np.int32(total + acc)
        return total

    return dot_i16


def child(quick: bool, repeats: int) -> dict:
    """Measured in the child process (Haswell code, AVX2 kernel, OpenBLAS Haswell)."""
    import re

    from bench import gemm as G
    from refrt import host
    from refrt.kernels import gemm_int8, pack_b

    info = host.info()
    rng = np.random.default_rng(0)
    dot = _dot_kernel()
    a16 = rng.integers(-128, 128, DOT_N).astype(np.int16)
    b16 = rng.integers(-128, 128, DOT_N).astype(np.int16)
    reps = 2000
    dot(a16, b16, 1)
    expect = 2 * int(a16.astype(np.int64) @ b16.astype(np.int64))
    assert int(dot(a16, b16, 2)) == expect, "the dot micro-kernel gives a wrong sum"
    dot_asm = "\n".join(dot.inspect_asm().values())
    dot_ops = {"vpmaddwd": len(re.findall(r"^\s*vpmaddwd\s", dot_asm, re.M)),
               "zmm": len(re.findall(r"zmm", dot_asm))}
    asm = G.asm_evidence()
    shapes = SHAPES[-1:] if quick else SHAPES
    ms = [1, 128] if quick else MS
    out = {"cpu": f"{info.cpu_name} ({info.cpu_class})", "int8_kernel": info.int8_kernel,
           "env": {k: os.environ.get(k) for k in CHILD_ENV}, "asm": asm, "dot_asm": dot_ops,
           "rows": {}}
    for threads in sorted({1, min(2, C.max_threads())}):
        C.set_threads(threads)
        rows = []
        t = C.measure({"dot": lambda: dot(a16, b16, reps)}, repeats=repeats)["dot"]
        peak = 2.0 * DOT_N * reps / t.median / 1e9
        for k, n in shapes:
            b = rng.integers(-127, 128, (k, n)).astype(np.int8)
            packed = pack_b(b)
            bf = b.astype(np.float32)
            for m in ms:
                a = rng.integers(0, 256, (m, k)).astype(np.uint8)
                af = a.astype(np.float32)
                got = gemm_int8(a, packed, A_ZP, 0)
                exact = ((a.astype(np.float64) - A_ZP) @ b.astype(np.float64)).astype(np.int64)
                wrong = int(np.count_nonzero(got.astype(np.int64) != exact))
                tm = C.measure({"refrt": lambda: gemm_int8(a, packed, A_ZP, 0),
                                "sgemm": lambda: af @ bf}, repeats=repeats)
                ops = 2.0 * m * k * n
                rows.append({"m": m, "k": k, "n": n, "refrt": ops / tm["refrt"].median / 1e9,
                             "sgemm": ops / tm["sgemm"].median / 1e9, "peak": peak,
                             "wrong": wrong, "n_refrt": C.fmt_n(tm["refrt"]),
                             "n_sgemm": C.fmt_n(tm["sgemm"])})
        out["rows"][threads] = rows
    return out


def main(argv=None):
    p = C.arg_parser(__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse_hidden())
    args = p.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    if args.child:
        print(json.dumps(child(args.quick, repeats)))
        return None
    load0 = C.settle(args)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "bench.avx2_yardstick", "--child", "--repeats", str(repeats)]
    if args.quick:
        cmd.append("--quick")
    env = {**os.environ, **CHILD_ENV}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800,
                          cwd=str(Path(__file__).resolve().parent.parent))
    if done.returncode:
        raise SystemExit(f"the child failed:\n{done.stderr[-3000:]}")
    res = json.loads(done.stdout.strip().splitlines()[-1])
    body = render(res, load0, time.perf_counter() - t0, repeats)
    print(body)
    if C.should_write(args):
        best = max((r["refrt"] / r["sgemm"], r) for rows in res["rows"].values() for r in rows
                   if r["m"] >= 96)
        worst = min((r["refrt"] / r["sgemm"], r) for rows in res["rows"].values() for r in rows
                    if r["m"] >= 96)
        targets = [C.target("AVX2 int8 GEMM (forced, Haswell code) vs OpenBLAS Haswell sgemm, M >= 96",
                            ">= 1.2x (onnxruntime's exact path on the AVX2 EPYC: 1.2-2.1x)",
                            f"{C.fmt_ratio(worst[0])} - {C.fmt_ratio(best[0])}",
                            C.fmt_ratio(worst[0]), worst[0] >= 1.2,
                            "same CPU, same process; see section 1b")]
        C.write_section("avx2_yardstick", body, targets)
    return body


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


def render(res: dict, load0: str, elapsed: float, repeats: int) -> str:
    asm = res["asm"]
    parts = [
        f"Child process: {res['cpu']}, int8 kernel `{res['int8_kernel']}`, "
        + ", ".join(f"`{k}={v}`" for k, v in res["env"].items())
        + f"; {repeats} interleaved rounds per cell; section took {elapsed:.0f} s; {load0}.\n",
        f"Machine code of the forced kernel (`{asm['kernel']}`, compiled afresh): "
        f"{asm['counts']['vpmaddwd']} `vpmaddwd`, multiply-accumulates on "
        f"xmm/ymm/zmm: {asm['widths']['xmm']}/{asm['widths']['ymm']}/{asm['widths']['zmm']}. "
        f"The dot micro-kernel: {res['dot_asm']['vpmaddwd']} `vpmaddwd`, "
        f"{res['dot_asm']['zmm']} zmm references.\n",
        "GOPS = 2·M·K·N / median time (GFLOPS for sgemm); the vpmaddwd dot counts a multiply and "
        "an add per int16 product. \"wrong\": outputs differing from the exact product.\n",
    ]
    headers = ["M", "K", "N", "refrt avx2 GOPS", "OpenBLAS Haswell sgemm GFLOPS",
               "vpmaddwd dot GOPS", "refrt / sgemm", "refrt / dot", "wrong", "n"]
    for threads, rows in sorted(res["rows"].items(), key=lambda kv: int(kv[0])):
        table = [[r["m"], r["k"], r["n"], C.fmt_num(r["refrt"]), C.fmt_num(r["sgemm"]),
                  C.fmt_num(r["peak"]), C.fmt_ratio(r["refrt"] / r["sgemm"]),
                  C.fmt_ratio(r["refrt"] / r["peak"]), r["wrong"], r["n_refrt"]]
                 for r in rows]
        parts.append(f"### {threads} thread{'s' if int(threads) > 1 else ''}\n")
        parts.append(C.md_table(headers, table))
        parts.append("")
        C.print_table(f"AVX2 yardstick, {threads} thread(s)", headers, table)
    parts.append(
        "Reading: the targets of issue 15 were measured on an AVX2-only EPYC against onnxruntime; "
        "here there is no such onnxruntime to run, so the comparison is with the float32 GEMM "
        "of the same code class on this CPU. onnxruntime's exact u8 x s8 path ran at 1.2-2.1x "
        "OpenBLAS's sgemm there: \"refrt / sgemm\" >= 1.2 would put refrt's AVX2 kernel at that "
        "level, CPU for CPU.\n")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
