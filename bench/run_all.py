"""Run every benchmark and write bench/RESULTS.md.

    python -m bench.run_all            (or python bench/run_all.py)
    python -m bench.run_all --only gemm dispatch
    python -m bench.run_all --quick    (smoke test: small shapes, few rounds, RESULTS.md untouched)

Each script runs in its own Python process (its thread pools, compiled kernels and models do not
leak into the next one) and rewrites its own section of bench/RESULTS.md; the targets table at
the top is rebuilt from all sections each time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["gemm", "avx2_yardstick", "conv", "quantize", "end_to_end", "dispatch", "small_models", "conv_models", "startup", "restricted", "float_ops"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these scripts")
    p.add_argument("--quick", action="store_true", help="smoke test; RESULTS.md is not written")
    p.add_argument("--repeats", type=int, help="interleaved rounds per cell (default 7)")
    args = p.parse_args(argv)
    extra = (["--quick"] if args.quick else []) + (["--repeats", str(args.repeats)] if args.repeats else [])
    failed = []
    t0 = time.perf_counter()
    for name in args.only or SCRIPTS:
        print(f"\n===== bench.{name} =====", flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}", *extra], cwd=str(ROOT))
        print(f"===== bench.{name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in "
              f"{time.perf_counter() - t:.0f} s =====", flush=True)
        if rc != 0:
            failed.append(name)
    print(f"\nall done in {time.perf_counter() - t0:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + ("" if args.quick else f"; results in {ROOT / 'bench' / 'RESULTS.md'}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
