"""Shared helpers for the benchmarks: machine description, thread control, interleaved timing,
one-node models, markdown tables and the sectioned bench/RESULTS.md.

Timing rule used everywhere: the runtimes being compared are called in turn (interleaved, the
starting runtime rotating every round), after warm-up, and each cell is the median of the rounds.
One round of one runtime is a block of ``number`` back-to-back calls (``number`` chosen so that a
block lasts at least ``min_sample`` seconds); the reported time is the block time / ``number``.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"

# Order of the sections in RESULTS.md (key, title).
SECTIONS = [
    ("gemm", "1. int8 GEMM"),
    ("avx2_yardstick", "1b. The AVX2 int8 GEMM on this CPU, against fixed yardsticks"),
    ("conv", "2. Integer convolution"),
    ("quantize", "3. Quantize / Dequantize / DynamicQuantizeLinear"),
    ("end_to_end", "4. End to end"),
    ("dispatch", "5. Per-node dispatch overhead"),
    ("small_models", "5b. Small models with many nodes (speech RNN, Constant nodes)"),
    ("conv_models", "5c. Conv-heavy models (MobileNet-style, FP32 and static INT8)"),
    ("startup", "6. Start-up"),
    ("restricted", "6b. Restricted sessions (reduced-operator config)"),
    ("float_ops", "7. Float ops in onnxruntime's order (\"ort\" numerics)"),
]

INT8_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx_vnni_int8", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")


# --------------------------------------------------------------------------- machine


def cpu_model_and_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if m:
            model = m.group(1).strip()
        f = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        if f:
            flags = set(f.group(1).split())
    except OSError:
        pass
    return model, flags


_ARCH_GET_XCOMP_PERM = 0x1022
_XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL = 158  # x86-64


def amx_tile_permission() -> bool | None:
    """True when this process may use AMX tiles (Linux grants XTILEDATA on request; onnxruntime's
    MLAS requests it at import when the CPU has AMX-INT8, and then dispatches its u8 GEMMs to the
    AMX kernel). None where it cannot be asked."""
    if platform.machine() not in ("x86_64", "AMD64") or sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        value = ctypes.c_uint64(0)
        if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_GET_XCOMP_PERM, ctypes.byref(value)) != 0:
            return None
        return bool(value.value & (1 << _XFEATURE_XTILEDATA))
    except Exception:
        return None


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    parts = []
    for p in threadpool_info():
        if p.get("user_api") == "blas":
            parts.append(f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')}, "
                         f"{p.get('threading_layer')} threads, {p.get('num_threads')} threads)")
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def machine_info() -> dict:
    import numba
    import onnx
    import onnxruntime

    model, flags = cpu_model_and_flags()
    try:
        import llvmlite.binding as ll
        llvm_cpu = ll.get_host_cpu_name()
    except Exception:
        llvm_cpu = "?"
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        layer = f"{numba.config.THREADING_LAYER} (none chosen yet)"
    from refrt import host

    h = host.info()
    return {
        "cpu": model,
        "cpu_class": h.cpu_class,
        "host_summary": host.summary(h),
        "ort_u8s8": f"{h.ort_u8s8} ({h.ort_u8s8_source})",
        "flags": [f for f in INT8_FLAGS if f in flags],
        "missing_flags": [f for f in INT8_FLAGS if f not in flags],
        "llvm_cpu": llvm_cpu,
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_threading_layer": layer,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "blas": blas_info(),
        "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                         if k in os.environ},
        "ort_amx": amx_tile_permission(),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def machine_markdown(info: dict) -> str:
    vnni = [f for f in info["flags"] if "vnni" in f or f.startswith("amx")]
    amx = info["ort_amx"]
    amx_text = {True: "granted to this process after `import onnxruntime` (MLAS requested it: its "
                      "u8 GEMMs dispatch to the AMX kernel, which falls back to AVX512-VNNI for "
                      "small blocks)",
                False: "not granted (ORT's MLAS uses its AVX512-VNNI / AVX-VNNI kernels)",
                None: "could not be queried"}[amx]
    if "amx_int8" not in info["flags"]:
        amx_text = "this CPU has no AMX"
    lines = [
        f"- CPU: **{info['cpu']}** (LLVM host CPU `{info['llvm_cpu']}`), {info['cores']} logical "
        f"cores ({info['usable_cores']} usable)",
        f"- int8-relevant flags present: `{' '.join(info['flags'])}`",
        f"- absent: `{' '.join(info['missing_flags']) or '-'}`",
        f"- CPU class: **{info['cpu_class']}** (`refrt host`): {info['host_summary']}",
        f"- VNNI/AMX: {'yes: ' + ', '.join(vnni) if vnni else 'no'}. onnxruntime's u8 x s8 GEMM here: "
        f"{info['ort_u8s8']} (exact with `vpdpbusd` / `tdpbusd`; `vpmaddubsw` saturates int16 pairs "
        f"on AVX2 and AVX-512 without VNNI).",
        f"- AMX tile-data permission (arch_prctl ARCH_GET_XCOMP_PERM): {amx_text}",
        f"- Python {info['python']}, numpy {info['numpy']}, numba {info['numba']} "
        f"(threading layer `{info['numba_threading_layer']}`, {info['numba_threads']} threads max), "
        f"onnxruntime {info['onnxruntime']}, onnx {info['onnx']}",
        f"- BLAS: {info['blas']}; OPENBLAS_CORETYPE/L2_SIZE: "
        f"{info['openblas_env'] or 'not set'}",
        f"- Thread-pool wait policies in the benchmark processes: {wait_policy_text()}. Several "
        f"runtimes (and, inside refrt, Numba's OpenMP pool and OpenBLAS) share the 2 cores; with "
        f"the default spin-waiting, a pool that just finished keeps a core busy while the next one "
        f"needs it (2-thread GEMMs ran 4x to over 10x slower that way in a trial run). See bench/README.md.",
        f"- Date: {info['date']}",
    ]
    return "\n".join(lines)


def load_text() -> str:
    """1/5/15-minute load averages: other processes on this shared machine show up here."""
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def _cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v), idle


def busy_fraction(interval: float = 1.0) -> float | None:
    """Share of all cores busy (any process) over ``interval`` seconds; None off Linux."""
    try:
        t0, i0 = _cpu_times()
        time.sleep(interval)
        t1, i1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_for_quiet(max_wait: float = 90.0, threshold: float = 0.15) -> str:
    """Wait (at most ``max_wait`` s) until other processes leave the cores idle; returns a note
    for the results: the busy share seen last and how long it waited."""
    t0 = time.perf_counter()
    busy = busy_fraction()
    while busy is not None and busy > threshold and time.perf_counter() - t0 < max_wait:
        busy = busy_fraction(2.0)
    waited = time.perf_counter() - t0
    if busy is None:
        return "machine load unknown"
    state = "quiet" if busy <= threshold else "still busy"
    return f"cores {100 * busy:.0f} % busy before the section ({state} after {waited:.0f} s of waiting)"


# --------------------------------------------------------------------------- threads

_BLAS_LIMITER = None


def set_threads(n: int) -> str:
    """Limit Numba, BLAS (threadpoolctl) to n threads; returns how BLAS was limited.
    onnxruntime sessions take their count from ``ort_session(threads=n)``."""
    global _BLAS_LIMITER
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "default threads"
    if _BLAS_LIMITER is not None:
        _BLAS_LIMITER.restore_original_limits()
    _BLAS_LIMITER = threadpool_limits(limits=n, user_api="blas")
    return f"{n} (threadpoolctl)"


def max_threads() -> int:
    import numba
    return numba.config.NUMBA_NUM_THREADS


# --------------------------------------------------------------------------- sessions and models


ORT_SPINNING = os.environ.get("BENCH_ORT_SPINNING", "0")


def wait_policy_text() -> str:
    keys = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")
    env = ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in keys)
    return f"{env}, ORT session.intra_op.allow_spinning={ORT_SPINNING}"


def ort_session(model, threads: int | None = None, optimize: bool = True, config: dict | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", ORT_SPINNING)
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    data = model if isinstance(model, (str, bytes, os.PathLike)) else model.SerializeToString()
    if isinstance(data, os.PathLike):
        data = str(data)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def refrt_session(model):
    import refrt

    return refrt.InferenceSession(model)


def refrt_has_op(op_type: str, domain: str = "", opset: int = 21) -> bool:
    from refrt import registry

    return registry.lookup(op_type, domain, opset) is not None


def one_node_model(op_type, inputs, outputs, initializers=(), attrs=None, opset=21, domain=""):
    """inputs/outputs: [(name, onnx elem type, shape)]; initializers: {name: array} or pairs."""
    from onnx import helper, numpy_helper

    inits = dict(initializers)
    node_inputs = [n for n, *_ in inputs]
    graph_inputs = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs if n not in inits]
    node = helper.make_node(op_type, node_inputs, [n for n, *_ in outputs], domain=domain,
                            **(attrs or {}))
    graph = helper.make_graph([node], op_type.lower(), graph_inputs,
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="refrt.bench")
    model.ir_version = 8
    return model


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    median: float        # seconds per call
    q1: float
    q3: float
    repeats: int         # rounds whose samples make the median
    number: int          # calls per block
    noisy: int = 0       # rounds during which other processes were busy: dropped, or ...
    kept_noisy: bool = False  # ... kept, when too few quiet rounds were left

    @property
    def spread(self) -> float:
        """interquartile range relative to the median"""
        return (self.q3 - self.q1) / self.median if self.median else 0.0


def _quartiles(xs):
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


class OtherLoad:
    """Share of the machine's cores used by *other* processes between start() and stop():
    busy time from /proc/stat minus this process's own CPU time (all its threads)."""

    def __init__(self):
        self.ok = True
        try:
            _cpu_times()
        except (OSError, ValueError, IndexError):
            self.ok = False
        self.ncpu = os.cpu_count() or 1
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def start(self):
        if self.ok:
            self.t, self.i = _cpu_times()
            self.own = time.process_time()
            self.wall = time.perf_counter()

    def stop(self) -> float:
        if not self.ok:
            return 0.0
        t, i = _cpu_times()
        wall = time.perf_counter() - self.wall
        busy = ((t - self.t) - (i - self.i)) / self.hz
        own = time.process_time() - self.own
        return max(0.0, (busy - own) / (self.ncpu * max(wall, 1e-9)))


NOISE_THRESHOLD = float(os.environ.get("BENCH_NOISE_THRESHOLD", "0.10"))


_WAIT_BUDGET = [float(os.environ.get("BENCH_WAIT_BUDGET", "45"))]  # seconds per process


def wait_briefly_for_quiet(max_wait: float = 3.0, threshold: float = 0.10) -> None:
    """Before a round: poll (50 ms windows) until other processes leave the cores, at most
    ``max_wait`` seconds, and at most BENCH_WAIT_BUDGET seconds (default 45) over the whole
    process, so that a machine that stays busy only costs that much. Our own pools are idle here
    (the caller just slept)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min(max_wait, _WAIT_BUDGET[0]):
        b = busy_fraction(0.05)
        if b is None or b <= threshold:
            break
    _WAIT_BUDGET[0] = max(0.0, _WAIT_BUDGET[0] - (time.perf_counter() - t0))


def measure(fns: dict, repeats: int = 7, warmup: int = 2, min_sample: float = 0.01,
            budget: float | None = None, min_repeats: int = 3, pause: float = 0.002,
            max_extra: int | None = None) -> dict:
    """Interleaved timing of ``fns`` ({name: callable}); returns {name: Timing}.

    Each callable is warmed up ``warmup`` times (the fastest warm-up call sizes the block), then
    rounds run every callable once per round (a block of ``number`` calls) in a rotating order.
    Before each round the machine is given up to 3 s to go quiet; a round during which other
    processes used more than NOISE_THRESHOLD of the cores (``OtherLoad``) is dropped and run
    again, up to ``max_extra`` extra rounds (default: half the rounds + 1). ``budget`` (seconds per
    callable) lowers the number of rounds for slow callables, never below ``min_repeats``. The
    median is over the clean rounds (over all rounds if fewer than ``min_repeats`` are clean);
    Timing records how many rounds made the median and how many were dropped. ``pause`` seconds
    of sleep separate two blocks, so a pool still spinning after one does not steal cores from
    the next.
    """
    names = list(fns)
    number, per_call = {}, {}
    for name in names:
        fn = fns[name]
        best = float("inf")
        for _ in range(max(1, warmup)):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        per_call[name] = max(best, 1e-9)
        number[name] = max(1, math.ceil(min_sample / per_call[name])) if per_call[name] < min_sample else 1
    rounds = repeats
    if budget is not None:
        for name in names:
            cost = per_call[name] * number[name]
            rounds = min(rounds, max(min_repeats, int(budget // cost)))
    extra = rounds // 2 + 1 if max_extra is None else max_extra
    meter = OtherLoad()
    clean = {n: [] for n in names}
    noisy = {n: [] for n in names}
    r = done = 0
    while done < rounds and r < rounds + extra:
        order = names[r % len(names):] + names[:r % len(names)]
        time.sleep(pause)
        wait_briefly_for_quiet()
        meter.start()
        got = {}
        for name in order:
            fn, k = fns[name], number[name]
            time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            got[name] = (time.perf_counter() - t0) / k
        others = meter.stop()
        r += 1
        if others <= NOISE_THRESHOLD:
            done += 1
            for n, v in got.items():
                clean[n].append(v)
        else:
            for n, v in got.items():
                noisy[n].append(v)
    out = {}
    for name in names:
        kept = len(clean[name]) < min(min_repeats, rounds)
        xs = clean[name] + noisy[name] if kept else clean[name]
        q1, q3 = _quartiles(xs)
        out[name] = Timing(statistics.median(xs), q1, q3, len(xs), number[name], len(noisy[name]), kept)
    return out


# --------------------------------------------------------------------------- formatting


def profile_runs(sess, feed, runs: int, category) -> tuple[dict, list]:
    """``runs`` calls of ``sess.run(None, feed)`` under cProfile: ({category: own seconds},
    [(own s, cumulative s, calls, "file:line function")] largest own time first), where
    ``category(filename, function)`` names a function's group and files are shown relative to
    the repository or to site-packages."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(runs):
        sess.run(None, feed)
    prof.disable()
    by_cat, entries = {}, []
    root = str(ROOT) + "/"
    for (filename, line, func), (_, nc, tt, ct, _) in pstats.Stats(prof).stats.items():
        cat = category(filename, func)
        by_cat[cat] = by_cat.get(cat, 0.0) + tt
        where = filename.replace(root, "").split("site-packages/")[-1] if filename != "~" else ""
        entries.append((tt, ct, nc, f"{where}:{line} {func}" if where else func))
    entries.sort(reverse=True)
    return by_cat, entries


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds * 1e6:.1f} µs"


def fmt_num(x: float, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def fmt_n(t) -> str:
    """Rounds in the median, and the rounds run in all when noisy ones were dropped."""
    if not t.noisy:
        return str(t.repeats)
    if t.kept_noisy:
        return f"{t.repeats} ({t.noisy} disturbed)"
    return f"{t.repeats} of {t.repeats + t.noisy}"


def fmt_ratio(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def md_table(headers, rows) -> str:
    out = ["| " + " | ".join(str(h) for h in headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def print_table(title, headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    from refrt import host

    print(f"\n{title}  [CPU class {host.info().cpu_class}]")
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


def target(name: str, goal: str, measured: str, ratio: str, met: bool | None, note: str = "") -> dict:
    return {"target": name, "goal": goal, "measured": measured, "ratio": ratio, "met": met,
            "note": note}


# --------------------------------------------------------------------------- RESULTS.md

_SECTION_RE = re.compile(r"<!-- section:([\w@-]+) -->\n(.*?)<!-- /section:\1 -->", re.S)
_TARGETS_RE = re.compile(r"<!-- targets:([\w@-]+) (.*?) -->")
_CLASS_RE = re.compile(r"_Measured on CPU class ([^:]+):")
# CPU classes (refrt.host.cpu_class) from the least to the most capable: the order of the
# tables of one section
CLASS_ORDER = ["AVX2", "AVX-512", "AVX-VNNI", "AVX512-VNNI", "AMX"]


def _read_sections() -> dict:
    """{(section key, CPU class): text} of bench/RESULTS.md: each section keeps one table per
    CPU class it was measured on (a section written before classes were kept apart counts as
    the class its first line names)."""
    if not RESULTS.exists():
        return {}
    out = {}
    for m in _SECTION_RE.finditer(RESULTS.read_text()):
        key, _, cls = m.group(1).partition("@")
        if not cls:
            found = _CLASS_RE.search(m.group(2))
            cls = found.group(1) if found else "unknown"
        out[(key, cls)] = m.group(2)
    return out


def _class_rank(cls: str) -> tuple:
    return (CLASS_ORDER.index(cls) if cls in CLASS_ORDER else len(CLASS_ORDER), cls)


def write_section(key: str, body: str, targets: list | None = None, info: dict | None = None) -> None:
    """Replace (or add) section ``key`` of bench/RESULTS.md for this machine's CPU class (the
    tables of other classes stay) and rebuild the header: targets from every section and class
    present, machine from this run."""
    sections = _read_sections()
    title = dict(SECTIONS)[key]
    info = info or machine_info()
    cls = info["cpu_class"]
    text = (f"## {title} — {cls}\n\n_Measured on CPU class {cls}: {info['host_summary']}; "
            f"{info['date']}._\n\n{body.strip()}\n\n")
    text += f"<!-- targets:{key}@{cls} {json.dumps(targets or [])} -->\n"
    sections[(key, cls)] = text
    order = [(k, c) for k, _ in SECTIONS
             for c in sorted({c for kk, c in sections if kk == k}, key=_class_rank)]

    all_targets = []
    for k, c in order:
        m = _TARGETS_RE.search(sections[(k, c)])
        if m:
            all_targets.extend(dict(t, cpu_class=c) for t in json.loads(m.group(2)))
    rows = []
    for t in all_targets:
        met = {True: "**met**", False: "**not met**", None: "n/a"}[t["met"]]
        rows.append([t["target"], t["cpu_class"], t["goal"], t["measured"], t["ratio"], met,
                     t.get("note", "")])

    parts = [
        "# refrt benchmark results\n",
        "Generated by `python -m bench.run_all` (or one script of `bench/` alone, which rewrites its "
        "own section). Times are medians of interleaved rounds after warm-up; `n` is the number "
        "of rounds. Ratios compare runtimes measured in the same run. The machine is shared and "
        "noisy: read differences under ~10 % as noise.\n",
        "## Targets\n",
        md_table(["target", "CPU class", "goal", "measured", "ratio", "status", "note"], rows) if rows
        else "(no section with targets measured yet)",
        "",
        "## Machine of the section written last\n",
        "Each section keeps one table per CPU class it was measured on (named in its title and "
        "first line); running a script replaces only its table for the class of the machine it "
        "runs on.\n",
        machine_markdown(info),
        "",
    ]
    for k, c in order:
        title = dict(SECTIONS)[k]
        text = re.sub(r"^## .*", lambda _: f"## {title} — {c}", sections[(k, c)], count=1)
        text = re.sub(r"<!-- targets:[\w@-]+ ", f"<!-- targets:{k}@{c} ", text, count=1)
        parts.append(f"<!-- section:{k}@{c} -->\n{text}<!-- /section:{k}@{c} -->\n")
    RESULTS.write_text("\n".join(parts))


# --------------------------------------------------------------------------- baselines


def baseline_times(script: str, directory: str, repeats: int) -> dict:
    """Run ``script --child`` in a child process with the refrt checked out in ``directory``
    first on the path (env BENCH_BASELINE); return the JSON its last line prints, plus the commit
    the checkout is at ("commit"). The script's --child mode times that refrt and prints JSON.
    The child imports the checkout's ``bench`` package too (it comes first on the path), so its
    --child code uses only what that checkout's bench/common.py has (``measure``)."""
    import subprocess

    env = dict(os.environ, BENCH_BASELINE=str(Path(directory).resolve()))
    out = subprocess.run([sys.executable, str(Path(script).resolve()), "--child",
                          "--repeats", str(repeats)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the baseline run failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    try:
        commit = subprocess.run(["git", "-C", directory, "log", "-1", "--format=%h %s"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = directory
    result["commit"] = commit[:90]
    return result


# --------------------------------------------------------------------------- command line


def arg_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds per cell (default 7)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: fewer shapes and rounds (results are not written)")
    p.add_argument("--no-write", action="store_true", help="print tables only, leave RESULTS.md")
    return p


def settle(args) -> str:
    """Before a section: wait for other processes to leave the cores (BENCH_QUIET_WAIT seconds at
    most, default 20; not in --quick runs) and return a note on the machine's load."""
    if args.quick:
        return f"load average {load_text()}"
    note = wait_for_quiet(float(os.environ.get("BENCH_QUIET_WAIT", "20")))
    return f"{note}; load average {load_text()}"


def should_write(args) -> bool:
    return not (args.quick or args.no_write)
