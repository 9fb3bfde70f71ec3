"""Start-up: import + session creation + first run of BERT-base, each in a fresh process.

    python -m bench.startup         (or python bench/startup.py)

A child Python process times ``import refrt`` (or ``import onnxruntime``), session creation from
the model file, the first run and a second run (batch 1, seq 128); the parent times the whole
process. refrt is measured with a cold Numba cache (NUMBA_CACHE_DIR = a new empty folder each
time: every kernel the model needs is compiled) and a warm one (a folder filled by an earlier
run). Models: the BERT-base FP32 encoder and its quantize_dynamic QInt8 version. The model file
is in the OS page cache in every case (it was just written). Children run one after the other,
the configurations interleaved; a child during which other processes kept the cores busy is run
again (at most twice).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import bench  # noqa: F401  (thread-pool wait policies, before NumPy is imported)

# isort: split

from bench import common as C

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
which, path = sys.argv[1], sys.argv[2]
if which == "refrt":
    import refrt as rt
    t1 = time.perf_counter()
    sess = rt.InferenceSession(path)
else:
    import onnxruntime as rt
    t1 = time.perf_counter()
    sess = rt.InferenceSession(path, providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
import numpy as np
rng = np.random.default_rng(0)
feeds = {"input_ids": rng.integers(0, 30522, (1, 128), dtype=np.int64),
         "attention_mask": np.ones((1, 128), np.int64),
         "token_type_ids": np.zeros((1, 128), np.int64)}
t2b = time.perf_counter()
sess.run(None, feeds)
t3 = time.perf_counter()
sess.run(None, feeds)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "session": t2 - t1, "ready": t2 - t0,
                  "first_run": t3 - t2b, "second_run": t4 - t3}))
"""

FIELDS = ("import", "session", "ready", "first_run", "second_run", "process")


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def run_child(which: str, path: Path, cache_dir: str | None, env_extra: dict | None = None) -> dict | None:
    """One child process; waits (briefly) for quiet cores first and records in "others" the
    share of the cores that other processes used while it ran."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    for k, v in (env_extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    C.wait_briefly_for_quiet(5.0)
    c0, (b0, i0) = _children_cpu(), C._cpu_times()
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(path)], env=env, cwd=str(C.ROOT),
                         capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    b1, i1 = C._cpu_times()
    busy = ((b1 - b0) - (i1 - i0)) / os.sysconf("SC_CLK_TCK")
    others = max(0.0, (busy - (_children_cpu() - c0)) / ((os.cpu_count() or 1) * wall))
    if out.returncode != 0:
        print(f"child {which} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process"] = wall
    res["others"] = others
    return res


def import_breakdown() -> tuple[list, float]:
    """``python -X importtime -c "import refrt"``: self time summed per top-level package."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import refrt"], cwd=str(C.ROOT),
                         capture_output=True, text=True, timeout=300)
    by_pkg, total = {}, 0.0
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, cum, name = line[len("import time:"):].split("|", 2)
        try:
            us = int(own.strip())
        except ValueError:
            continue
        name = name.strip()
        pkg = name.split(".")[0]
        if pkg == "refrt":
            pkg = ".".join(name.split(".")[:2])  # refrt.ops, refrt.graph, ...
        by_pkg[pkg] = by_pkg.get(pkg, 0.0) + us * 1e-6
        total += us * 1e-6
    rows = sorted(by_pkg.items(), key=lambda kv: -kv[1])
    top = [[f"`{p}`", C.fmt_time(t), f"{100 * t / total:.0f} %"] for p, t in rows[:10]]
    rest = sum(t for _, t in rows[10:])
    top.append([f"{len(rows) - 10} other packages", C.fmt_time(rest), f"{100 * rest / total:.0f} %"])
    return top, total


def session_profile(path: Path, top: int = 10) -> list:
    """cProfile of ``refrt.InferenceSession(path)`` (refrt already imported): top own times."""
    import cProfile
    import pstats

    import refrt

    prof = cProfile.Profile()
    prof.enable()
    refrt.InferenceSession(str(path))
    prof.disable()
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())
    rows = []
    root = str(C.ROOT) + "/"
    for (fn, line, func), (cc, nc, tt, ct, _) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]:
        where = fn.replace(root, "").split("site-packages/")[-1]
        name = f"{where}:{line} {func}" if fn != "~" else func
        rows.append([f"`{name}`", nc, C.fmt_time(tt), C.fmt_time(ct)])
    return rows, total


def build_models(folder: Path, small: bool) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from refrt.testing.models import bert_encoder

    cfg = dict(layers=2 if small else 12, hidden=768, heads=12, vocab=30522, max_positions=512)
    fp32 = folder / "bert_fp32.onnx"
    onnx.save(bert_encoder(**cfg), fp32)
    q8 = folder / "bert_int8.onnx"
    quantize_dynamic(str(fp32), str(q8), weight_type=QuantType.QInt8)
    return {"BERT-base FP32": fp32, "BERT-base INT8 (dynamic, QInt8)": q8}


def main(argv=None):
    p = C.arg_parser(__doc__.splitlines()[0])
    p.add_argument("--int8-repeats", type=int, default=3, help="rounds for the INT8 model (default 3)")
    args = p.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    int8_repeats = 1 if args.quick else args.int8_repeats
    load0 = C.settle(args)
    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="refrt_bench_startup_")
    folder = Path(tmp.name)
    models = build_models(folder, small=args.quick)
    warm_cache = str(folder / "numba_cache_warm")
    results = {}
    for label, path in models.items():
        n = repeats if "FP32" in label else int8_repeats
        # bytecode kept between processes, outside the source tree
        pyc = {"PYTHONDONTWRITEBYTECODE": None, "PYTHONPYCACHEPREFIX": str(folder / "pycache")}
        # fill the warm caches (not counted)
        run_child("refrt", path, warm_cache)
        run_child("refrt", path, warm_cache, pyc)
        configs = {"refrt, cold Numba cache": ("cold", None), "refrt, warm Numba cache": (warm_cache, None),
                   "onnxruntime": (None, None)}
        if "FP32" in label:
            configs["refrt, warm Numba cache + cached .pyc"] = (warm_cache, pyc)
        samples = {k: [] for k in configs}
        noisy = {k: 0 for k in configs}
        for r in range(n):
            names = list(configs)
            names = names[r % len(names):] + names[:r % len(names)]
            for name in names:
                cache, env_extra = configs[name]
                if cache == "cold":
                    cache = tempfile.mkdtemp(prefix="numba_cold_", dir=folder)
                for attempt in range(3):  # a child run during which others were busy is redone
                    res = run_child("refrt" if name.startswith("refrt") else "ort", path, cache, env_extra)
                    if res is None or res["others"] <= C.NOISE_THRESHOLD:
                        break
                    noisy[name] += 1
                    if cache == "cold" or (cache and "numba_cold_" in cache):
                        cache = tempfile.mkdtemp(prefix="numba_cold_", dir=folder)
                if res:
                    samples[name].append(res)
        results[label] = {k: ({f: statistics.median(s[f] for s in v) for f in FIELDS},
                              f"{len(v)}" + (f" (+{noisy[k]} redone)" if noisy[k] else ""))
                          for k, v in samples.items() if v}
        rows = [[k, *(C.fmt_time(med[f]) for f in FIELDS), cnt] for k, (med, cnt) in results[label].items()]
        C.print_table(label, HEADERS, rows)
    sess_prof, sess_total = session_profile(models["BERT-base FP32"])
    C.print_table("refrt.InferenceSession(BERT-base FP32) under cProfile",
                  ["function", "calls", "own", "cumulative"], sess_prof)
    imports, import_total = import_breakdown()
    C.print_table("import refrt (-X importtime, self time per package)", ["package", "time", "share"], imports)
    elapsed = time.perf_counter() - t_start
    tmp.cleanup()

    parts = [
        f"Medians over fresh child processes (n each); section took {elapsed:.0f} s; at the start "
        f"{load0}; load average at the end {C.load_text()}. *ready* = import + session creation; "
        f"*process* = the whole child process as timed by the parent (interpreter start-up, "
        f"imports, session, two runs, exit). PYTHONDONTWRITEBYTECODE="
        f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')} in this environment (when 1, "
        f"every process compiles refrt's .py files again); the row *+ cached .pyc* unsets it and "
        f"keeps bytecode in a temporary PYTHONPYCACHEPREFIX filled by an earlier run. Child processes use the default "
        f"threads of each runtime.",
        "",
    ]
    targets = []
    for label, res in results.items():
        parts.append(f"### {label}\n")
        parts.append(C.md_table(HEADERS, [[k, *(C.fmt_time(med[f]) for f in FIELDS), cnt]
                                          for k, (med, cnt) in res.items()]))
        parts.append("")
        warm = res.get("refrt, warm Numba cache")
        ortr = res.get("onnxruntime")
        pyc_row = res.get("refrt, warm Numba cache + cached .pyc")
        if "FP32" in label and warm:
            ready = warm[0]["ready"]
            pyc_text = f"; with cached .pyc {C.fmt_time(pyc_row[0]['ready'])}" if pyc_row else ""
            targets.append(C.target(
                "session ready (warm cache), BERT-base FP32", "<= 1 s",
                f"refrt import + session {C.fmt_time(ready)} (first run {C.fmt_time(warm[0]['first_run'])}); "
                f"onnxruntime {C.fmt_time(ortr[0]['ready']) if ortr else '-'}{pyc_text}",
                f"{ready:.2f} s / 1 s", ready <= 1.0,
                f"refrt / ORT ready: {C.fmt_ratio(ready / ortr[0]['ready'])}" if ortr else ""))
    parts += ["### What `import refrt` spends its time on\n",
              f"`python -X importtime -c \"import refrt\"` in a fresh process: {C.fmt_time(import_total)} "
              f"in all (the interpreter's own start-up modules included); self time summed per "
              f"top-level package (refrt per sub-package).\n",
              C.md_table(["package", "import time (self)", "share"], imports),
              "",
              "### What session creation spends its time on (BERT-base FP32)\n",
              f"cProfile of `refrt.InferenceSession(path)` in a process that has imported refrt "
              f"already (total under the profiler {C.fmt_time(sess_total)}); top functions by own "
              f"time.\n",
              C.md_table(["function", "calls", "own time", "cumulative"], sess_prof)]
    body = "\n".join(parts)
    if C.should_write(args):
        C.write_section("startup", body, targets)
    return body


HEADERS = ["runtime", "import", "session", "ready", "first run", "second run", "process", "n"]


if __name__ == "__main__":
    main()
