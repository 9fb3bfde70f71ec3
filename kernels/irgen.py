"""LLVM IR pieces shared by the kernels written in IR (``vnni``, ``avx2``, ``amx``, ``fgemm``).

Each of those kernels spells its register tile out in LLVM IR through a Numba ``@intrinsic``;
what they have in common is here: pointers to array elements, storing a tile of accumulators, and
a cache prefetch.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["element_pointers", "store_tile", "add_tile", "outlined", "loop_not_unrolled", "prefetch_bytes"]


def element_pointers(context, builder, signature, args, positions) -> list:
    """In an intrinsic's codegen: for each array argument at ``positions``, whose next argument
    is an element offset, a pointer to that element (of the array's element type)."""
    return [builder.gep(cgutils.create_struct_proxy(signature.args[i])(context, builder, value=args[i]).data,
                        [args[i + 1]]) for i in positions]


def store_tile(builder, c_base, ldc, accs) -> None:
    """In an intrinsic's codegen: store the accumulators ``accs[r][v]`` (allocas of one LLVM
    vector type) to the elements ``c_base + r * ldc + v * lanes``: a register tile's rows, ldc
    elements apart."""
    for r, row_accs in enumerate(accs):
        row = builder.gep(c_base, [builder.mul(ldc, ir.Constant(ldc.type, r))])
        for v, acc in enumerate(row_accs):
            value = builder.load(acc)
            ptr = builder.gep(row, [ir.Constant(ldc.type, value.type.count * v)])
            builder.store(value, builder.bitcast(ptr, value.type.as_pointer()), align=4)


def add_tile(builder, c_base, ldc, accs) -> None:
    """As ``store_tile``, but each accumulator is added to what the element holds (one addition,
    c + acc: float for float vectors, wrapping for integer ones) and the sum stored."""
    for r, row_accs in enumerate(accs):
        row = builder.gep(c_base, [builder.mul(ldc, ir.Constant(ldc.type, r))])
        for v, acc in enumerate(row_accs):
            value = builder.load(acc)
            ptr = builder.bitcast(builder.gep(row, [ir.Constant(ldc.type, value.type.count * v)]),
                                  value.type.as_pointer())
            add = builder.add if isinstance(value.type.element, ir.IntType) else builder.fadd
            builder.store(add(builder.load(ptr, align=4), value), ptr, align=4)


def outlined(module, name: str, arg_types: list, build) -> ir.Function:
    """A void function ``name`` of ``module`` taking ``arg_types``, its body written by
    ``build(builder, args)`` the first time it is asked for: a register tile's loop kept out of
    the function that calls it (``noinline``), so that LLVM allocates its registers on its own --
    inlined into a caller with several such loops, one of them spilled accumulators."""
    try:
        return module.get_global(name)
    except KeyError:
        pass
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), arg_types), name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    build(builder, fn.args)
    builder.ret_void()
    return fn


def loop_not_unrolled(builder, count, body) -> None:
    """``for i in range(count): body(builder, i)`` as a loop LLVM is told not to unroll
    (``llvm.loop.unroll.disable``): unrolled twice, a register tile's adds were reassociated
    across the two copies, which took registers the accumulators needed (spills in the loop)."""
    module = builder.module
    disable = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
    loop_id = module.add_metadata([None, disable])
    loop_id.operands = (loop_id, disable)          # a loop id refers to itself first
    entry = builder.block
    head = builder.append_basic_block("tile.loop")
    done = builder.append_basic_block("tile.done")
    zero = ir.Constant(count.type, 0)
    builder.cbranch(builder.icmp_signed(">", count, zero), head, done)
    builder.position_at_end(head)
    i = builder.phi(count.type)
    i.add_incoming(zero, entry)
    body(builder, i)
    nxt = builder.add(i, ir.Constant(count.type, 1))
    i.add_incoming(nxt, builder.block)
    back = builder.cbranch(builder.icmp_signed("<", nxt, count), head, done)
    back.set_metadata("llvm.loop", loop_id)
    builder.position_at_end(done)


@intrinsic
def prefetch_bytes(typingctx, arr, off, nbytes):
    """Ask the CPU to bring ``nbytes`` of ``arr`` from element ``off`` on into its caches (one
    ``prefetcht1`` per 64-byte line: L2 and up). A hint: nothing is read, no fault is possible."""
    sig = types.void(arr, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        (start,) = element_pointers(context, builder, signature, args, (0,))
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        start = builder.bitcast(start, i8p)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
        lines = builder.sdiv(args[2], ir.Constant(args[2].type, 64))
        with cgutils.for_range(builder, lines) as loop:
            line = builder.gep(start, [builder.mul(loop.index, ir.Constant(loop.index.type, 64))])
            builder.call(fn, [line, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen

