"""Arrow columns as numpy arrays, read from their buffers.

``pyarrow.Array.to_numpy`` imports pandas for arrays with nulls (a third of a second at start-up)
and copies; replay only needs the raw integers and the validity bitmap.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def valid_mask(arr: pa.Array) -> np.ndarray:
    """The validity of each value of ``arr`` as booleans, read from its bitmap (no pandas, no copy of the data)."""
    n = len(arr)
    if arr.null_count == 0:
        return np.ones(n, dtype=bool)
    if pa.types.is_dictionary(arr.type):
        arr = arr.indices
    bits = np.unpackbits(np.frombuffer(arr.buffers()[0], dtype=np.uint8), count=arr.offset + n, bitorder="little")
    return bits[arr.offset:].view(bool)  # (0 and 1 bytes are valid booleans: no copy)


def int_values(arr: pa.Array) -> np.ndarray:
    """The values of an integer or boolean array (or a dictionary's indices) as numpy, nulls as 0.

    Read from the Arrow buffers: ``Array.to_numpy`` would import pandas for nullable arrays, which
    costs a third of a second at start-up.
    """
    if pa.types.is_dictionary(arr.type):
        arr = arr.indices
    n = len(arr)
    t = arr.type
    if pa.types.is_boolean(t):
        bits = np.unpackbits(np.frombuffer(arr.buffers()[1], dtype=np.uint8), count=arr.offset + n, bitorder="little")
        vals = bits[arr.offset:]
    else:
        dtype = np.dtype(f"{'u' if pa.types.is_unsigned_integer(t) else 'i'}{t.bit_width // 8}")
        vals = np.frombuffer(arr.buffers()[1], dtype=dtype, count=n, offset=arr.offset * dtype.itemsize)
    if arr.null_count:
        vals = np.where(valid_mask(arr), vals, vals.dtype.type(0))  # (same dtype: one pass, one copy)
    return vals


def index_array(idx: np.ndarray) -> pa.Array:
    """Row positions as an Arrow int64 array for ``take`` (``pa.array`` of numpy would import pandas)."""
    data = np.ascontiguousarray(idx, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])
