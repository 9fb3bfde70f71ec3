"""``refrt explain MODEL --node NAME [--at I,J,...] [--input NAME=FILE.npy ...|--random-inputs]``

Prints how one output element of one node is computed (see :mod:`refrt.explainer`); ``--json``
gives the same as a JSON object. Exits with 1 when the recomputed value differs from the node's
(an explanation that does not explain is a failure), 0 otherwise.
"""

from __future__ import annotations

import json

import numpy as np


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="one output element of one node, step by step")
    p.add_argument("model")
    p.add_argument("--node", required=True,
                   help="the node's name (or the name of one of its output tensors)")
    p.add_argument("--at", default=None, metavar="I,J,...",
                   help="index of the element in the node's output (default: all zeros)")
    p.add_argument("--output", default="0", metavar="INDEX|NAME",
                   help="which output of the node (default: the first)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    p.add_argument("--random-inputs", action="store_true",
                   help="random values for inputs not given with --input")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="size of a symbolic dimension for --random-inputs (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--numerics", choices=("ort", "spec"), default="ort")
    p.add_argument("--emulate-avx2-u8s8", action="store_true",
                   help="run the node with onnxruntime's AVX2 int16 saturation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args) -> int:
    from ..feeds import split_pair
    from .core import explain

    inputs = {}
    for item in args.input:
        name, path = split_pair(item, "--input")
        inputs[name] = np.load(path, allow_pickle=False)
    dims = dict(split_pair(d, "--dim") for d in args.dim)
    output = int(args.output) if args.output.lstrip("-").isdigit() else args.output
    e = explain(args.model, args.node, at=args.at, inputs=inputs, output=output,
                random_inputs=args.random_inputs, seed=args.seed,
                dims={k: int(v) for k, v in dims.items()}, numerics=args.numerics,
                emulate_avx2_u8s8=args.emulate_avx2_u8s8)
    if args.json:
        print(json.dumps(e.as_dict(), indent=2))
    else:
        print(e.render())
    return 1 if e.match is False else 0
