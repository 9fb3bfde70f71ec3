"""int8 GEMM at BERT-base shapes: refrt's Numba kernel vs onnxruntime MatMulInteger vs NumPy BLAS.

    python -m bench.gemm            (or python bench/gemm.py)

For u8 x s8 (b_zp 0, as quantize_dynamic's QInt8 weights) and u8 x u8 (b_zp 128, QUInt8), with
A and B full range, M in {1, 32, 128, 512} and (K, N) in {(768, 768), (768, 3072), (3072, 768)},
on 1 and 2 threads. Columns (GOPS = 2*M*K*N / s):

* refrt kernel: ``gemm_int8(a, pack_b(b), a_zp, b_zp)`` with B packed once outside the timing
  (the call still pads A and takes row sums, as an op must) -- the default kernel of this CPU;
  refrt vnni / refrt portable: the same call forcing the other kernels (where they differ);
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

# isort: split
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
    """Compile refrt's default exact GEMM kernel afresh (cache=False) and read its machine code."""
    from numba import njit, types

    from refrt.kernels import gemm as G

    if G.default_kernel() in ("amx", "vnni"):
        from refrt.kernels import amx as A
        from refrt.kernels import vnni as V

        fn, kernel = ((A.gemm_u8s8_amx, "amx.gemm_u8s8_amx") if G.default_kernel() == "amx"
                      else (V.gemm_u8s8_vnni, "vnni.gemm_u8s8_vnni"))
        fresh = njit(cache=False, parallel=True)(fn.py_func)
        u1, s1, i1, n = types.uint8[::1], types.int8[::1], types.int32[::1], types.int64
        fresh.compile((u1, n, n, s1, n, n, i1, i1, i1, i1, i1, n))
    elif G.default_kernel() == "avx2":
        from refrt.kernels import avx2 as A2

        fresh = njit(cache=False, parallel=True)(A2.gemm_s16_avx2.py_func)
        s1, i1, n = types.int16[::1], types.int32[::1], types.int64
        fresh.compile((s1, n, n, s1, n, n, i1, i1, i1, i1, i1, n))
        kernel = "avx2.gemm_s16_avx2"
    else:
        fresh = njit(cache=False, parallel=True)(G._gemm_dot_kernel.py_func)
        a2, i1, o2 = types.int16[:, ::1], types.int64[::1], types.int32[:, ::1]
        fresh.compile((a2, a2, i1, i1, i1, i1, o2, types.int64))
        kernel = "gemm._gemm_dot_kernel"
    asm = "\n".join(fresh.inspect_asm().values())
    names = ("vpmaddwd", "vpdpwssd", "vpdpwssds", "vpdpbusd", "vpdpbusds", "vpmaddubsw", "vpmulld",
             "tdpbusd", "tileloadd", "tilestored", "ldtilecfg", "tilerelease")
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

    def mac_count(bl):   # an AMX tile product counts for the 256 vpdpbusd it replaces
        return sum(256 if re.match(r"^\s*tdpbusd\s", ln) else 1 for ln in bl
                   if re.match(r"^\s*(vpmaddwd|vpdp\w+|tdpbusd)\s", ln))

    hot = max(blocks, key=mac_count)
    hot = [ln for ln in hot if not ln.strip().startswith(".p2align")][:24]
    return {"counts": counts, "widths": widths, "hot_loop": "\n".join(ln.rstrip() for ln in hot),
            "kernel": kernel}


def main(argv=None):
    args = C.arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    from refrt.kernels import gemm_int8, pack_b
    from refrt.kernels.gemm import default_kernel

    rng = np.random.default_rng(0)
    ms = [1, 128] if args.quick else MS
    shapes_kn = [(768, 3072)] if args.quick else SHAPES_KN
    repeats = 3 if args.quick else args.repeats
    threads_list = sorted({1, min(2, C.max_threads())})
    have_op = C.refrt_has_op("MatMulInteger", "", 17)
    from refrt.kernels import avx2 as A2

    have_avx2 = A2.available()

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
                    if default_kernel() == "amx":
                        fns["refrt vnni"] = lambda: gemm_int8(a, packed, A_ZP, bzp, kernel="vnni")
                    if have_avx2 and default_kernel() != "avx2":
                        fns["refrt avx2"] = lambda: gemm_int8(a, packed, A_ZP, bzp, kernel="avx2")
                    if default_kernel() != "portable":
                        fns["refrt portable"] = lambda: gemm_int8(a, packed, A_ZP, bzp, kernel="portable")
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
                            "refrt portable": gemm_int8(a, packed, A_ZP, bzp, kernel="portable"),
                            **({"refrt vnni": gemm_int8(a, packed, A_ZP, bzp, kernel="vnni")}
                               if default_kernel() == "amx" else {}),
                            **({"refrt avx2": gemm_int8(a, packed, A_ZP, bzp, kernel="avx2")}
                               if have_avx2 else {}),
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
                    exact = g["ORT x64qp"] if "ORT x64qp" in g else g["ORT"]
                    row = [m, k, n, C.fmt_num(g["refrt kernel"]),
                           C.fmt_num(g["refrt vnni"]) if "refrt vnni" in g else "-",
                           C.fmt_num(g["refrt avx2"]) if "refrt avx2" in g else "-",
                           C.fmt_num(g["refrt portable"]) if "refrt portable" in g else "-",
                           C.fmt_num(g["refrt op"]) if "refrt op" in g else "n/a",
                           C.fmt_num(g["ORT"]),
                           C.fmt_num(g["ORT x64qp"]) if "ORT x64qp" in g else "-",
                           C.fmt_num(g["NumPy f32"]), C.fmt_num(g["NumPy f64"]),
                           C.fmt_ratio(g["refrt kernel"] / g["ORT"]),
                           C.fmt_ratio(g["refrt kernel"] / exact), C.fmt_n(t["refrt kernel"])]
                    table.append(row)
                    if (m, k, n) == TARGET:
                        target_cell[(dname, threads)] = (g, t)
                # release the sessions before the next case (the timed lambdas close over them)
                ort_default = ort_x64 = ref_sess = None
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


HEADERS = ["M", "K", "N", "refrt kernel", "refrt vnni", "refrt avx2", "refrt portable", "refrt op", "ORT", "ORT x64qp", "NumPy f32",
           "NumPy f64", "kernel/ORT", "kernel/ORT exact", "n"]


def render(rows_by_table, wrong, target_cell, asm, threads_list, blas_note, repeats, elapsed, have_op,
           load):
    from refrt import host

    h = host.info()
    parts = [
        f"GOPS = 2·M·K·N / median time; {repeats} interleaved rounds per cell after warm-up, "
        f"blocks of calls >= 10 ms; section took {elapsed:.0f} s; machine load (load averages 1/5/15 min) {load}. A, B full range "
        f"(u8 A with zero point {A_ZP}; s8 B zero point 0; u8 B zero point 128). "
        f"NumPy/OpenBLAS threads limited with threadpoolctl; Numba with `numba.set_num_threads`; "
        f"ORT with `intra_op_num_threads`.",
        "",
        "Exactness (outputs differing from the exact product, summed over all shapes and thread "
        "counts): " + ", ".join(f"{d} {name}: {cnt}" for (d, name), cnt in sorted(wrong.items()))
        + (f". On this CPU ({h.cpu_class}) ORT's default u8 x s8 path saturates int16 pairs "
           "(`vpmaddubsw`: the wrong outputs counted above); its exact path is "
           "`session.x64quantprecision=1` (ORT x64qp), measured beside it."
           if h.ort_u8s8 == "saturating" else
           f". On this CPU ({h.cpu_class}) ORT's default u8 x s8 path is exact, so the default path "
           "*is* the exact path; `session.x64quantprecision=1` (ORT x64qp) is measured beside it and "
           "runs the same kernels."),
        "",
    ]
    if not have_op:
        parts.append("refrt has no MatMulInteger op registered yet: the refrt op column is n/a.\n")
    for (dname, threads), rows in rows_by_table.items():
        parts.append(f"### {dname}, {threads} thread{'s' if threads > 1 else ''}\n")
        parts.append(C.md_table(HEADERS, rows))
        parts.append("")
    parts.append(
        "Columns: `refrt kernel` is `gemm_int8` with its default kernel on this CPU "
        f"(`{asm['kernel']}`; on an AMX CPU `gemm_int8` runs the VNNI kernel below 16 rows), "
        "`refrt vnni` the `vpdpbusd` register-tile kernel, `refrt avx2` the `vpmaddwd` "
        "register-tile kernel that AVX2-only CPUs run by default (here compiled for this CPU, "
        "so LLVM may use VNNI's `vpdpwssd` for its multiply-adds), "
        "`refrt portable` the int16 `vpmaddwd` kernel every x86-64 CPU "
        "runs, `refrt op` a refrt session running one MatMulInteger node. `kernel/ORT exact` "
        "compares with ORT's exact path as the issue defines it: `session.x64quantprecision=1` "
        "for u8 x s8, the default for u8 x u8.\n")
    parts.append(f"### Machine code of the default kernel (`{asm['kernel']}`, fresh cache=False "
                 "compile, `inspect_asm`)\n")
    c = asm["counts"]
    parts.append("Instruction counts: " + ", ".join(f"`{k}` {v}" for k, v in c.items())
                 + ". Destination width of the multiply-accumulate instructions: "
                 + ", ".join(f"{k} {v}" for k, v in asm["widths"].items()) + ".\n")
    parts.append("Hot loop (the basic block with the most multiply-accumulates):\n")
    parts.append("```asm\n" + asm["hot_loop"] + "\n```\n")
    if c["tdpbusd"]:
        parts.append(
            "Reading: the hot loop is the AMX tile product of `kernels/amx.py`: per 64 bytes of K it "
            "loads two B tiles (16 groups of four k x 16 columns each, `tileloadd` with a 128-byte "
            "stride out of the same panels the VNNI kernel reads) and one A tile per 16 rows, and "
            "issues one `tdpbusd` per (16-row, 16-column) C tile: 16 x 16 x 64 = 16,384 exact u8 x s8 "
            "byte products added into int32 per instruction. LLVM allocates the tile registers, "
            "writes the tile configuration (`ldtilecfg`) and releases the tiles (`tilerelease`). "
            "Rows below a 16-row tile run on the VNNI tiles (the `vpdpbusd` counted above).")
    elif c["vpdpbusd"]:
        parts.append(
            "Reading: the hot loop is the 8-row x 32-column register tile of `kernels/vnni.py`: per "
            "group of four K steps it loads two 64-byte B vectors, broadcasts 4 bytes of each A row "
            "and issues 16 `vpdpbusd` into 16 zmm accumulators (64 u8 x s8 byte products each, added "
            "straight into int32 -- exact). Nothing is reduced horizontally and nothing is widened.")
    elif asm["kernel"].startswith("avx2"):
        parts.append(
            "Reading: this CPU has AVX2 but no AVX512-VNNI, so the 6-row x 16-column register tile "
            "of `kernels/avx2.py` runs: per pair of K steps it widens two 16-byte B vectors to int16 "
            "as it loads them (`vpmovsxbw`), broadcasts two int16 of each A row and issues 12 "
            "`vpmaddwd` + `vpaddd` into 12 ymm accumulators (exact: every u8/s8 value fits int16); "
            "with the product and the broadcast that is all 16 ymm registers, and the loop has no "
            "stack access.")
    else:
        parts.append(
            "Reading: this CPU has no AVX2 kernel to run, so the portable kernel runs: one int16 dot "
            "product per output (`vpmaddwd` + `vpaddd`), both operands loaded for every multiply "
            "and a horizontal reduction per output.")

    g1 = target_cell.get(("u8s8", min(threads_list)), ({}, None))[0]
    if g1:
        m, k, n = TARGET
        facts = (f"at {m}x{k}x{n} on 1 thread ORT's default u8 x s8 ran {C.fmt_num(g1['ORT'])} GOPS "
                 f"against refrt's {C.fmt_num(g1['refrt kernel'])}")
    else:
        facts = "see the tables"
    if h.cpu_class == "AMX":
        parts.append(
            "\n\nWhat limits it:\n\n"
            f"* **Against ORT's AMX path** ({facts}): both run `tdpbusd`; the rest of a call is "
            "overhead around the tiles -- A is copied into padded rows and summed, the zero points "
            "are folded into the int32 result in a second pass per panel, and every call starts "
            "Numba's thread pool. Small M leaves most of a 16-row tile empty or falls back to VNNI.\n"
            "* **M = 1 (a matrix-vector product)** runs the VNNI kernel's 1-row tile per 32-column "
            "panel: two accumulators, so the loop waits on `vpdpbusd` latency, and ORT's GEMV is "
            "faster. Splitting K over several accumulators, or one tile covering more columns, "
            "would help it.")
    elif asm["kernel"].startswith("avx2"):
        parts.append(
            f"\n\nWhat limits it ({facts}): the same instruction mix as MLAS's exact AVX2 kernel "
            "(its U8U8 kernel: 6 x 16 tiles, B widened as loaded, `vpmaddwd` + `vpaddd`), which "
            "does 16 multiply-adds per `vpmaddwd`; ORT's default u8 x s8 path does 32 per "
            "`vpmaddubsw` and saturates. A 6 x 16 tile alone, its operands in L1, ran 141 GOPS per "
            "core on a znver3 EPYC; packing A into MLAS-style row groups measured neutral "
            "(0.90-1.08x), so the rest is K blocking and the per-call work around the tiles (A "
            "widened to int16, zero points folded per panel).")
    else:
        parts.append(f"\n\nOn this CPU ({h.cpu_class}) {facts}.")

    targets = []
    threads2 = max(threads_list)
    cell = target_cell.get(("u8s8", threads2))
    cell_u = target_cell.get(("u8u8", threads2))
    if cell:
        g, t = cell
        exact = g.get("ORT x64qp", g["ORT"])
        ratio = g["refrt kernel"] / exact
        m, k, n = TARGET
        u8u8 = (f"; u8u8 refrt {C.fmt_num(cell_u[0]['refrt kernel'])} vs ORT {C.fmt_num(cell_u[0]['ORT'])} "
                f"GOPS, {C.fmt_ratio(cell_u[0]['refrt kernel'] / cell_u[0]['ORT'])}") if cell_u else ""
        targets.append(C.target(
            f"int8 GEMM u8s8 {m}x{k}x{n}, {threads2} threads",
            ">= 1.0x ORT exact path",
            f"refrt {C.fmt_num(g['refrt kernel'])} GOPS vs ORT exact path (x64quantprecision) "
            f"{C.fmt_num(exact)} GOPS{u8u8}",
            C.fmt_ratio(ratio), ratio >= 1.0,
            f"ORT's default u8s8 path on this CPU ({h.cpu_class}, {h.ort_u8s8}) ran "
            f"{C.fmt_num(g['ORT'])} GOPS: refrt reaches {C.fmt_ratio(g['refrt kernel'] / g['ORT'])} of it"))
    return "\n".join(parts), targets


if __name__ == "__main__":
    main()
