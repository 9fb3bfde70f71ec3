"""A deeper fuzz run than CI's: mutants of the bundled model and the test seeds, outcomes by class.

    python scripts/fuzz.py [--count 20000] [--seed 0]

Prints a table of outcomes (result, each refrt error class, untyped, hang, feed changed) and every
case that broke the promise, with the seed that rebuilds it.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from test_fuzz import SEEDS

    from refrt.testing.mutate import mutate, try_model

    counts, broken, kinds = collections.Counter(), [], collections.Counter()
    t0 = time.monotonic()
    for i in range(args.seed, args.seed + args.count):
        rng = random.Random(i)
        data, what = mutate(rng.choice(SEEDS), rng)
        kinds[what.split(":")[0].split(" ")[0]] += 1
        outcome = try_model(data, seed=i, timeout=30)
        counts[outcome.split(":")[0]] += 1
        if outcome.startswith(("untyped", "hang", "feed")):
            broken.append((i, what, outcome))
    seconds = time.monotonic() - t0
    print(f"{args.count} mutants in {seconds:.0f} s (mutations: "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ")")
    for outcome, n in counts.most_common():
        print(f"  {outcome:<22} {n:>7}")
    for case in broken:
        print("BROKEN", *case)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
