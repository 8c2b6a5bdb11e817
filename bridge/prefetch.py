"""``prefetch_item``: a hint to the CPU to start loading one array item, for numba kernels whose memory reads are
known a few steps ahead but land in arrays far larger than the caches (hash-table probes, map rows): issued a few
items ahead, the cache misses overlap instead of stalling the loop one after another."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

PREFETCH_AHEAD = 16
"""How many items ahead the kernels start loading what they will read far off in memory: enough loads in flight to
overlap their misses, few enough that the lines are still cached when read."""


@intrinsic
def prefetch_item(typingctx, array, index):
    """Hint the CPU to load ``array[index]`` (a 1-D array, an in-bounds index) into every cache level, for reading.
    A hint only: no effect on results, and no fault for any address."""
    if not isinstance(array, types.Array) or array.ndim != 1 or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        array_type, index_type = signature.args
        items = context.make_array(array_type)(context, builder, args[0])
        position = context.cast(builder, args[1], index_type, types.intp)
        pointer = cgutils.get_item_pointer(context, builder, array_type, items, [position], wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32]), "llvm.prefetch.p0"
        )
        # llvm.prefetch(address, 0 = read, 3 = keep in all cache levels, 1 = data cache)
        builder.call(function, [builder.bitcast(pointer, byte_pointer), int32(0), int32(3), int32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen
