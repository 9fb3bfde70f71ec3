"""``refrt compare``: the mismatch debugger on the command line (a thin shell over
``refrt.debug.compare``).

    refrt compare MODEL --against onnxruntime|onnxruntime-optimized|spec|onnx-reference|saved:PATH
                  [--input NAME=FILE.npy ...] [--random-inputs] [--seed N] [--dim NAME=SIZE ...]
                  [--range [NAME=]LO:HI ...] [--atol A] [--rtol R] [--tol OUTPUT=ATOL:RTOL ...]
                  [--numerics ort|spec] [--emulate-avx2-u8s8] [--no-explain] [--all] [--limit N]
                  [--json FILE] [--html FILE] [--keep FILE.npz]

    refrt compare FLOAT_MODEL --quantized QMODEL [--runtime refrt|onnxruntime] [input flags]
    refrt reduce MODEL --against REF --out SMALL.onnx [--target TENSOR] [the input and
                 tolerance flags of refrt compare]

Without --input or --random-inputs, the inputs in test_data_set_0/ beside the model are used (what
refrt reduce writes). Exit status: 0 when every tensor matches, 3 when some differ, 1 on an error,
2 on a usage error.
"""

from __future__ import annotations

import numpy as np

from ..errors import RefrtError

DIFFERENCES = 3


def _common(p) -> None:
    p.add_argument("model")
    p.add_argument("--against", default="onnxruntime", metavar="REF",
                   help="onnxruntime (default), onnxruntime-optimized, spec, onnx-reference, saved:PATH")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    p.add_argument("--load-inputs", metavar="FILE.json", help="feeds saved by Polygraphy's --save-inputs")
    p.add_argument("--random-inputs", action="store_true", help="random values for inputs not given")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE")
    p.add_argument("--range", action="append", default=[], metavar="[NAME=]LO:HI")
    p.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (default 1e-5)")
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance (default 1e-5)")
    p.add_argument("--tol", action="append", default=[], metavar="OUTPUT=ATOL:RTOL",
                   help="tolerances for one tensor")
    p.add_argument("--numerics", choices=("ort", "spec"), default="ort")
    p.add_argument("--emulate-avx2-u8s8", action="store_true")


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare every tensor with a reference: where, how much, why",
                       description=__doc__.split("\n\n")[0])
    _common(p)
    p.add_argument("--no-explain", action="store_true", help="skip the replays and causes")
    p.add_argument("--quantized", metavar="QMODEL", help="quantization loss instead: MODEL is the float "
                   "model, QMODEL its quantized form (QDQ, QOperator or dynamic); every float tensor "
                   "against its dequantized counterpart")
    p.add_argument("--runtime", choices=("refrt", "onnxruntime"), default="refrt",
                   help="with --quantized: what runs the quantized model")
    p.add_argument("--requantize", metavar="'QUANTIZE FLAGS'",
                   help="with --quantized: how QMODEL was made, as refrt quantize's flags (e.g. "
                        "'--mode static --calib-data calib.npz'); each nodes_to_exclude candidate is "
                        "then re-quantized away and its effect on the outputs measured")
    p.add_argument("--all", action="store_true", help="list matching nodes too")
    p.add_argument("--limit", type=int, default=30, help="nodes in the table (default 30)")
    p.add_argument("--json", metavar="FILE", help="write the whole record as JSON")
    p.add_argument("--html", metavar="FILE", help="write a page with the error plotted per node")
    p.add_argument("--keep", metavar="FILE.npz", help="save refrt's tensors")
    p.set_defaults(func=run)
    r = sub.add_parser("reduce", help="cut a model down to the smallest subgraph that still differs")
    _common(r)
    r.add_argument("--out", required=True, metavar="SMALL.onnx",
                   help="where to write it (test_data_set_0/ goes beside it)")
    r.add_argument("--target", metavar="TENSOR", help="the tensor to keep differing (default: the "
                                                      "first tensor where a difference starts)")
    r.set_defaults(func=run_reduce)


def _pairs(items, what) -> dict:
    from ..feeds import split_pair

    return dict(split_pair(item, what) for item in items)


def _feeds(args) -> dict:
    from ..feeds import parse_ranges
    from .reduce import load_test_data

    feeds = {k: np.load(v, allow_pickle=False) for k, v in _pairs(args.input, "--input").items()}
    if args.load_inputs:
        from .references import load_polygraphy_inputs
        feeds = {**load_polygraphy_inputs(args.load_inputs), **feeds}
    dims = {k: int(v) for k, v in _pairs(args.dim, "--dim").items()}
    if args.random_inputs:
        from ..feeds import random_feed
        from ..session import InferenceSession

        generated = random_feed(InferenceSession(args.model), dims, args.seed, parse_ranges(args.range))
        feeds = {**generated, **feeds}
    elif not feeds:
        feeds = load_test_data(args.model) or {}
        if not feeds:
            raise RefrtError("give the inputs: --input NAME=FILE.npy, --random-inputs, or a "
                             "test_data_set_0/ folder beside the model")
    return feeds


def _tolerances(args) -> dict:
    tolerances = {}
    for name, spec in _pairs(args.tol, "--tol").items():
        a, sep, r = spec.partition(":")
        try:
            tolerances[name] = (float(a), float(r))
        except ValueError:
            raise RefrtError(f"--tol {name}={spec}: expected ATOL:RTOL") from None
    return tolerances


def run(args) -> int:
    from .compare import compare

    if args.quantized:
        return run_quant_loss(args)
    feeds, tolerances = _feeds(args), _tolerances(args)
    result = compare(args.model, feeds, args.against, atol=args.atol, rtol=args.rtol, tolerances=tolerances,
                     numerics=args.numerics, emulate_avx2_u8s8=args.emulate_avx2_u8s8,
                     keep=bool(args.keep), explain=not args.no_explain)
    print(result.table(limit=args.limit, show_all=args.all))
    if args.json:
        result.to_json(args.json)
    if args.html:
        result.to_html(args.html)
    if args.keep:
        np.savez(args.keep, **result.kept)
    return 0 if result.matches else DIFFERENCES


def run_reduce(args) -> int:
    from .reduce import reduce_model

    feeds = _feeds(args)
    r = reduce_model(args.model, feeds, args.against, target=args.target, out=args.out, atol=args.atol,
                     rtol=args.rtol, numerics=args.numerics, emulate_avx2_u8s8=args.emulate_avx2_u8s8)
    print(f"{r.target}: {r.nodes_before} nodes -> {r.nodes_after} "
          f"({', '.join(n.op_type for n in r.model.graph.node)}); written to {r.path} with "
          f"test_data_set_0/ beside it")
    print(f"reproduce: refrt compare {r.path} --against {args.against}"
          + (f" --atol {args.atol:g} --rtol {args.rtol:g}" if (args.atol, args.rtol) != (1e-5, 1e-5) else ""))
    return 0


def run_quant_loss(args) -> int:
    from .quant_loss import quant_loss

    feeds = _feeds(args)
    loss = quant_loss(args.model, args.quantized, feeds, runtime=args.runtime)
    if args.requantize:
        import contextlib
        import io
        import shlex

        from ..quantization.cli import build_parser, quantize_from_args
        from .quant_loss import measure_exclusions

        flags = shlex.split(args.requantize)

        def quantize(path, exclude):
            qargs = build_parser().parse_args([args.model, path, *flags])
            qargs.exclude = list(qargs.exclude) + list(exclude)
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_from_args(qargs)

        measure_exclusions(args.model, feeds, quantize, loss, runtime=args.runtime)
    print(loss.table(limit=args.limit))
    if args.json:
        loss.to_json(args.json)
    return 0
