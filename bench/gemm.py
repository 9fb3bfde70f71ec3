"""int8 GEMM at BERT-base shapes: refrt's Numba kernel vs onnxruntime MatMulInteger vs NumPy BLAS.

    python -m bench.gemm            (or python bench/gemm.py)

For u8 x s8 (b_zp 0, as quantize_dynamic's QInt8 weights) and u8 x u8 (b_zp 128, QUInt8), with
A and B full range, M in {1, 32, 128, 512} and (K, N) in {(768, 768), (768, 3072), (3072, 768)},
on 1 and 2 threads. Columns (GOPS = 2*M*K*N / s):

* refrt kernel: ``gemm_int8(a, pack_b(b), a_zp, b_zp)`` with B packed once outside the timing
  (the call still converts A to int16 and takes row sums, as an op must);
* refrt op: a one-node MatMulInteger model (B an initializer) in ``refrt.InferenceSession``;
* ORT: the same model in onnxruntime (default options); ORT x64qp: with the session config entry
  ``session.x64quantprecision=1`` (the switch that makes u8 x s8 exact on AVX2-only CPUs);
* NumPy float32 / float64: ``a @ b`` on float copies (BLAS; float64 is exact here, float32 only
  while partial sums stay below 2**24).

Every integer result is checked against an exact float64 product of the same operands (the
"wrong" columns count mismatching outputs). The section also inspects the kernel's machine code.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import bench  # noqa: F401  (thread-pool wait policies, before NumPy is imported)
import numpy as np
from onnx import TensorProto

from bench import common as C

SHAPES_KN = [(768, 768), (768, 3072), (3072, 768)]
MS = [1, 32, 128, 512]
TARGET = (128, 768, 3072)
A_ZP = 131
DTYPES = {  # name: (B dtype, onnx type, b zero point)
    "u8s8": (np.int8, TensorProto.INT8, 0),
    "u8u8": (np.uint8, TensorProto.UINT8, 128),
}


def matmul_integer_model(b, b_zp, b_type, k, n):
    return C.one_node_model(
        "MatMulInteger",
        [("A", TensorProto.UINT8, ["M", k]), ("B", b_type, [k, n]), ("a_zp", TensorProto.UINT8, []),
         ("b_zp", b_type, [])],
        [("Y", TensorProto.INT32, ["M", n])],
        {"B": b, "a_zp": np.array(A_ZP, np.uint8), "b_zp": np.array(b_zp, b.dtype)},
        opset=17)


def gops(m, k, n, seconds):
    return 2.0 * m * k * n / seconds / 1e9


def asm_evidence() -> dict:
    """Compile the exact GEMM kernel afresh (cache=False) and read its machine code."""
    from numba import njit, types

    from refrt.kernels import gemm as G

    fresh = njit(cache=False, parallel=True)(G._gemm_dot_kernel.py_func)
    a2, i1, o2 = types.int16[:, ::1], types.int64[::1], types.int32[:, ::1]
    fresh.compile((a2, a2, i1, i1, i1, i1, o2, types.int64))
    asm = "\n".join(fresh.inspect_asm().values())
    names = ("vpmaddwd", "vpdpwssd", "vpdpwssds", "vpdpbusd", "vpdpbusds", "vpmaddubsw", "vpmulld",
             "tdpbusd")
    counts = {nm: len(re.findall(rf"^\s*{nm}\s", asm, re.M)) for nm in names}
    widths = {"xmm": 0, "ymm": 0, "zmm": 0}
    for line in asm.splitlines():
        s = line.strip()
        if s.startswith(("vpmaddwd", "vpdpwssd", "vpdpbusd")):
            dest = s.split(",")[-1]
            for w in widths:
                if w in dest:
                    widths[w] += 1
    # the basic block with the most multiply-accumulate instructions = the hot inner loop
    blocks, cur = [], []
    for line in asm.splitlines():
        if re.match(r"^\.LBB\S+:", line) and cur:
            blocks.append(cur)
            cur = []
        cur.append(line)
    blocks.append(cur)

    def mac_count(bl):
        return sum(1 for ln in bl if re.match(r"^\s*(vpmaddwd|vpdp\w+)\s", ln))

    hot = max(blocks, key=mac_count)
    hot = [ln for ln in hot if not ln.strip().startswith(".p2align")][:24]
    return {"counts": counts, "widths": widths, "hot_loop": "\n".join(ln.rstrip() for ln in hot)}


def main(argv=None):
    args = C.arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    from refrt.kernels import gemm_int8, pack_b

    rng = np.random.default_rng(0)
    ms = [1, 128] if args.quick else MS
    shapes_kn = [(768, 3072)] if args.quick else SHAPES_KN
    repeats = 3 if args.quick else args.repeats
    threads_list = sorted({1, min(2, C.max_threads())})
    have_op = C.refrt_has_op("MatMulInteger", "", 17)

    rows_by_table = {}
    wrong = {}
    target_cell = {}
    blas_note = None
    load0 = C.settle(args)
    t_start = time.perf_counter()
    for threads in threads_list:
        blas_note = C.set_threads(threads)
        for dname, (bdt, btype, bzp) in DTYPES.items():
            table = rows_by_table.setdefault((dname, threads), [])
            for k, n in shapes_kn:
                if bdt == np.int8:
                    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
                else:
                    b = rng.integers(0, 256, (k, n), dtype=np.uint8)
                model = matmul_integer_model(b, bzp, btype, k, n)
                ort_default = C.ort_session(model, threads=threads)
                ort_x64 = (C.ort_session(model, threads=threads,
                                         config={"session.x64quantprecision": "1"})
                           if dname == "u8s8" else None)
                ref_sess = C.refrt_session(model) if have_op else None
                packed = pack_b(b)
                bf32, bf64 = b.astype(np.float32), b.astype(np.float64)
                for m in ms:
                    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
                    af32, af64 = a.astype(np.float32), a.astype(np.float64)
                    feed = {"A": a}
                    fns = {"refrt kernel": lambda: gemm_int8(a, packed, A_ZP, bzp)}
                    if ref_sess is not None:
                        fns["refrt op"] = lambda: ref_sess.run(None, feed)
                    fns["ORT"] = lambda: ort_default.run(None, feed)
                    if ort_x64 is not None:
                        fns["ORT x64qp"] = lambda: ort_x64.run(None, feed)
                    fns["NumPy f32"] = lambda: af32 @ bf32
                    fns["NumPy f64"] = lambda: af64 @ bf64

                    # exactness, once per case
                    ref = np.rint((af64 - A_ZP) @ (bf64 - bzp)).astype(np.int64)
                    outs = {"refrt kernel": gemm_int8(a, packed, A_ZP, bzp),
                            "ORT": ort_default.run(None, feed)[0]}
                    if ref_sess is not None:
                        outs["refrt op"] = ref_sess.run(None, feed)[0]
                    if ort_x64 is not None:
                        outs["ORT x64qp"] = ort_x64.run(None, feed)[0]
                    for name, y in outs.items():
                        bad = int(np.count_nonzero(y.astype(np.int64) != ref))
                        wrong[(dname, name)] = wrong.get((dname, name), 0) + bad

                    t = C.measure(fns, repeats=repeats, min_sample=0.01)
                    g = {name: gops(m, k, n, t[name].median) for name in fns}
                    row = [m, k, n, C.fmt_num(g["refrt kernel"]),
                           C.fmt_num(g["refrt op"]) if "refrt op" in g else "n/a",
                           C.fmt_num(g["ORT"]),
                           C.fmt_num(g["ORT x64qp"]) if "ORT x64qp" in g else "-",
                           C.fmt_num(g["NumPy f32"]), C.fmt_num(g["NumPy f64"]),
                           C.fmt_ratio(g["refrt kernel"] / g["ORT"]), C.fmt_n(t["refrt kernel"])]
                    table.append(row)
                    if (m, k, n) == TARGET:
                        target_cell[(dname, threads)] = (g, t)
                del ort_default, ort_x64, ref_sess
            C.print_table(f"{dname}, {threads} thread(s) [GOPS]", HEADERS, table)
    elapsed = time.perf_counter() - t_start

    asm = asm_evidence()
    print("\nkernel machine code:", asm["counts"], asm["widths"])
    print(asm["hot_loop"])

    load = f"at the start {load0}; at the end {C.load_text()}"
    body, targets = render(rows_by_table, wrong, target_cell, asm, threads_list, blas_note,
                           repeats, elapsed, have_op, load)
    if C.should_write(args):
        C.write_section("gemm", body, targets)
    return body


HEADERS = ["M", "K", "N", "refrt kernel", "refrt op", "ORT", "ORT x64qp", "NumPy f32", "NumPy f64",
           "kernel/ORT", "n"]


def render(rows_by_table, wrong, target_cell, asm, threads_list, blas_note, repeats, elapsed, have_op,
           load):
    parts = [
        f"GOPS = 2·M·K·N / median time; {repeats} interleaved rounds per cell after warm-up, "
        f"blocks of calls >= 10 ms; section took {elapsed:.0f} s; machine load (load averages 1/5/15 min) {load}. A, B full range "
        f"(u8 A with zero point {A_ZP}; s8 B zero point 0; u8 B zero point 128). "
        f"NumPy/OpenBLAS threads limited with threadpoolctl; Numba with `numba.set_num_threads`; "
        f"ORT with `intra_op_num_threads`.",
        "",
        "Exactness (outputs differing from the exact product, summed over all shapes and thread "
        "counts): " + ", ".join(f"{d} {name}: {cnt}" for (d, name), cnt in sorted(wrong.items()))
        + ". On this VNNI/AMX machine ORT's default u8 x s8 path is exact, so the default path "
        "*is* the exact path; `session.x64quantprecision=1` (ORT x64qp) is measured beside it and "
        "runs the same kernels.",
        "",
    ]
    if not have_op:
        parts.append("refrt has no MatMulInteger op registered yet: the refrt op column is n/a.\n")
    for (dname, threads), rows in rows_by_table.items():
        parts.append(f"### {dname}, {threads} thread{'s' if threads > 1 else ''}\n")
        parts.append(C.md_table(HEADERS, rows))
        parts.append("")
    parts.append("### Machine code of the exact kernel (`_gemm_dot_kernel`, fresh cache=False "
                 "compile, `inspect_asm`)\n")
    c = asm["counts"]
    parts.append("Instruction counts: " + ", ".join(f"`{k}` {v}" for k, v in c.items())
                 + f". Destination width of the multiply-accumulate instructions: "
                 + ", ".join(f"{k} {v}" for k, v in asm["widths"].items()) + ".\n")
    parts.append("Hot loop (the basic block with the most multiply-accumulates):\n")
    parts.append("```asm\n" + asm["hot_loop"] + "\n```\n")
    uses_vnni = c["vpdpwssd"] + c["vpdpwssds"] + c["vpdpbusd"] + c["vpdpbusds"] > 0
    parts.append(
        "Reading: the inner loop is one int16 dot product per output: "
        + ("VNNI instructions appear. " if uses_vnni else
           "`vpmaddwd` (int16 pairs -> int32) followed by a separate `vpaddd`; no `vpdpwssd` / "
           "`vpdpbusd` although the CPU has VNNI, and no AMX. ")
        + "Each multiply loads both operands from memory (no register reuse of A or B across "
          "outputs) and every output ends with a horizontal reduction, so the loop is bound by "
          "loads, not by multiplies.")

    g1 = target_cell.get(("u8s8", min(threads_list)), ({}, None))[0]
    g1u = target_cell.get(("u8u8", min(threads_list)), ({}, None))[0]
    if g1 and g1u:
        m, k, n = TARGET
        facts = (f"at {m}x{k}x{n} on 1 thread ORT u8 x s8 ran {C.fmt_num(g1['ORT'])} GOPS, "
                 f"{C.fmt_ratio(g1['ORT'] / g1u['ORT'])} its own u8 x u8 path "
                 f"({C.fmt_num(g1u['ORT'])}), {C.fmt_ratio(g1['ORT'] / g1['NumPy f32'])} OpenBLAS "
                 f"float32 ({C.fmt_num(g1['NumPy f32'])}) and {C.fmt_ratio(g1['ORT'] / g1['refrt kernel'])} "
                 f"refrt's kernel ({C.fmt_num(g1['refrt kernel'])})")
        f32 = f"{C.fmt_ratio(g1['NumPy f32'] / g1['refrt kernel'])} the kernel's speed at that shape"
    else:
        facts, f32 = "see the tables", "faster than the kernel"
    parts.append(
        "\n\nWhat would close the gap (nothing here was tried on refrt):\n\n"
        "* **ORT runs AMX here.** Its u8 x s8 MatMulInteger goes through MLAS's AMX kernel "
        f"(`tdpbusd` on 16x16 int32 tiles, 1024 byte-MACs per instruction): {facts}. LLVM does "
        "not emit AMX from loops, so no Numba kernel reaches that; matching it needs a compiled "
        "extension (intrinsics) or a library with AMX kernels.\n"
        "* **Within Numba, the kernel leaves most of the vector unit idle.** The hot loop "
        "multiplies with 128-bit `vpmaddwd` (8 int16 MACs per instruction) and adds with a "
        "separate `vpaddd`; the CPU has 512-bit `vpdpwssd` (32 int16 MACs, accumulate fused) "
        "and `vpdpbusd` (64 u8 x s8 MACs). Both operands are loaded from memory for every "
        "multiply and every output ends in a horizontal reduction. A register-blocked "
        "micro-kernel (a few rows of A broadcast against zmm-wide panels of B packed K-major in "
        "groups of 4 bytes, one accumulator register per (row, panel), no per-output reduction) "
        "is the shape a VNNI kernel needs; whether LLVM forms `vpdpbusd`/`vpdpwssd` from such "
        "Numba code has to be checked with `inspect_asm` (it did not form `vpdpwssd` from the "
        "current loop). Keeping A and B as 8-bit instead of widening to int16 also halves the "
        "bytes streamed.\n"
        f"* **An exact float path exists today:** OpenBLAS float32 ran {f32}, and it is exact "
        "when K is split into chunks whose partial sums stay below 2^24: with zero points folded "
        "in, |(a - a_zp)(b - b_zp)| <= 255*128 for u8 x s8 (chunks of 512) and 255*255 for "
        "u8 x u8 (chunks of 256), each chunk's result converted to int32 and summed. That is "
        "still far from ORT's AMX path, so on this machine the >= 1.0x target is out of reach "
        "for a pure NumPy/Numba kernel; on the AVX2-only CPU of FACTS.md (OpenBLAS float32 76/138 "
        "GOPS vs ORT's exact path 124/247 on 1/2 threads) the float32 route alone would give "
        "about 0.6x.")

    targets = []
    threads2 = max(threads_list)
    cell = target_cell.get(("u8s8", threads2))
    if cell:
        g, t = cell
        ratio = g["refrt kernel"] / g["ORT"]
        m, k, n = TARGET
        targets.append(C.target(
            f"int8 GEMM u8s8 {m}x{k}x{n}, {threads2} threads",
            ">= 1.0x ORT exact path",
            f"refrt {C.fmt_num(g['refrt kernel'])} GOPS vs ORT {C.fmt_num(g['ORT'])} GOPS "
            f"(x64qp {C.fmt_num(g.get('ORT x64qp', float('nan')))})",
            C.fmt_ratio(ratio), ratio >= 1.0,
            "ORT's default u8s8 path is exact on this VNNI/AMX CPU"))
    return "\n".join(parts), targets


if __name__ == "__main__":
    main()
