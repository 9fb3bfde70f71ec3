"""Import + session creation with and without a reduced-operator config, in fresh processes.

    python -m bench.restricted [--repeats N] [--quick] [--no-write]

A child Python process times ``import refrt`` and ``InferenceSession(model)`` (default: every
op family is imported on the first op lookup) or ``InferenceSession(model,
required_operators=CONFIG)`` (the model is checked against the config, written beforehand by
``refrt ops-config``, and only the families its ops live in are imported), and counts the
op family modules loaded. The configurations run interleaved, one child at a time; medians over
the rounds. Numba's cache is warm (an earlier run compiled the kernels).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import bench  # noqa: F401

# isort: split

from bench import common as C

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import refrt
t1 = time.perf_counter()
path, config = sys.argv[1], sys.argv[2]
options = {"required_operators": config} if config else {}
sess = refrt.InferenceSession(path, **options)
t2 = time.perf_counter()
families = [m for m in sys.modules if m.startswith("refrt.ops.") and not m.split(".")[-1].startswith("_")]
print(json.dumps({"import": t1 - t0, "session": t2 - t1, "families": len(families)}))
"""


def _models(tmp: Path) -> dict:
    import onnx

    from refrt.testing import models

    paths = {"digits CNN": str(Path(C.__file__).resolve().parent.parent / "refrt" / "data"
                               / "digits_cnn.onnx")}
    for name, fn in (("MobileNet-style", models.mobilenet_like), ("speech RNN", models.speech_rnn),
                     ("BERT-style encoder", models.bert_encoder)):
        paths[name] = str(tmp / f"{fn.__name__}.onnx")
        onnx.save(fn(), paths[name])
    return paths


def _child(path: str, config: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, path, config], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = C.arg_parser(__doc__.splitlines()[0]).parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    from refrt.optimize.ops_config import write_required_operators

    load0 = C.settle(args)
    rows, spreads = [], []
    with tempfile.TemporaryDirectory(prefix="refrt.bench.") as tmp:
        paths = _models(Path(tmp))
        for name, path in paths.items():
            config = str(Path(tmp) / (Path(path).stem + ".config"))
            write_required_operators(path, config)
            _child(path, "")           # warm the page cache and Numba's cache
            _child(path, config)
            runs: dict = {"default": [], "restricted": []}
            for _ in range(repeats):
                runs["default"].append(_child(path, ""))
                runs["restricted"].append(_child(path, config))
            med = {k: {m: statistics.median(r[m] for r in v) for m in ("import", "session")}
                   for k, v in runs.items()}
            fam = {k: v[0]["families"] for k, v in runs.items()}
            for k, v in runs.items():
                s = sorted(r["import"] + r["session"] for r in v)
                spreads.append((s[-1] - s[0]) / statistics.median(s))
            total = {k: med[k]["import"] + med[k]["session"] for k in med}
            rows.append([name, C.fmt_time(med["default"]["import"]),
                         C.fmt_time(med["default"]["session"]), C.fmt_time(total["default"]),
                         str(fam["default"]), C.fmt_time(med["restricted"]["session"]),
                         C.fmt_time(total["restricted"]), str(fam["restricted"]),
                         C.fmt_ratio(total["default"] / total["restricted"])])
    headers = ["model", "import refrt", "session (default)", "import + session (default)",
               "families", "session (restricted)", "import + session (restricted)", "families",
               "default / restricted"]
    C.print_table("Restricted sessions", headers, rows)
    load1 = C.load_text()
    body = (f"Medians of {repeats} fresh processes per cell, default and restricted interleaved; "
            f"`families`: op family modules of refrt/ops/ imported. The restricted session reads "
            f"the config written by `refrt ops-config MODEL`, checks the model against it and "
            f"imports only the families its ops live in; `import refrt` is the same in both "
            f"(it imports no op family). Largest spread (max - min) / median of a cell: "
            f"{max(spreads):.0%}: 2 shared cores, other processes were running "
            f"({load0}; after: load average {load1}).\n\n" + C.md_table(headers, rows))
    if C.should_write(args):
        C.write_section("restricted", body, [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
