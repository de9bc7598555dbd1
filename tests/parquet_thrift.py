"""A small Thrift compact-protocol reader and writer for editing Parquet footers in tests.

Hostile-input tests need footers that a Parquet writer would never produce: a null count that
disagrees with the pages, a field repeated, a list claiming more entries than there are bytes.
:func:`read_footer` turns a file's footer into nested lists of ``[field id, type, value]`` and
:func:`write_file` puts an edited tree back (lengths recomputed), so a test states the edit it
means.  Only what Parquet footers use is supported.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.d, self.p = data, 0

    def byte(self) -> int:
        b = self.d[self.p]
        self.p += 1
        return b

    def varint(self) -> int:
        out = shift = 0
        while True:
            b = self.byte()
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                return out
            shift += 7

    def zigzag(self) -> int:
        z = self.varint()
        return (z >> 1) ^ -(z & 1)

    def value(self, t: int) -> Any:
        if t in (TRUE, FALSE):
            return t == TRUE
        if t == BYTE:
            return self.byte()
        if t in (I16, I32, I64):
            return self.zigzag()
        if t == DOUBLE:
            v = struct.unpack("<d", self.d[self.p:self.p + 8])[0]
            self.p += 8
            return v
        if t == BINARY:
            n = self.varint()
            v = self.d[self.p:self.p + n]
            self.p += n
            return v
        if t in (LIST, SET):
            h = self.byte()
            n, et = h >> 4, h & 0x0F
            if n == 15:
                n = self.varint()
            if et in (TRUE, FALSE):
                return (et, [self.byte() == 1 for _ in range(n)])
            return (et, [self.value(et) for _ in range(n)])
        if t == STRUCT:
            return self.struct()
        raise ValueError(f"type {t}")

    def struct(self) -> list[list[Any]]:
        fields: list[list[Any]] = []
        last = 0
        while True:
            h = self.byte()
            t = h & 0x0F
            if t == STOP:
                return fields
            fid = last + (h >> 4) if h >> 4 else self.zigzag()
            last = fid
            fields.append([fid, t, self.value(t)])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _zz(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _value(t: int, v: Any) -> bytes:
    if t in (TRUE, FALSE):
        return b""
    if t == BYTE:
        return bytes([v & 0xFF])
    if t in (I16, I32, I64):
        return _zz(v)
    if t == DOUBLE:
        return struct.pack("<d", v)
    if t == BINARY:
        return _varint(len(v)) + v
    if t in (LIST, SET):
        et, items = v
        head = bytes([(len(items) << 4) | et]) if len(items) < 15 else bytes([0xF0 | et]) + _varint(len(items))
        if et in (TRUE, FALSE):
            return head + bytes(1 if x else 2 for x in items)
        return head + b"".join(_value(et, x) for x in items)
    if t == STRUCT:
        return write_struct(v)
    raise ValueError(f"type {t}")


def write_struct(fields: list[list[Any]]) -> bytes:
    out = bytearray()
    last = 0
    for fid, t, v in fields:
        tt = (TRUE if v else FALSE) if t in (TRUE, FALSE) else t
        delta = fid - last
        if 0 < delta <= 15:
            out.append((delta << 4) | tt)
        else:
            out.append(tt)
            out += _zz(fid)
        last = fid
        out += _value(t, v)
    out.append(STOP)
    return bytes(out)


def read_footer(path: Path) -> tuple[bytes, list[list[Any]]]:
    """The bytes before the footer, and the footer as a tree."""
    data = path.read_bytes()
    n = struct.unpack("<I", data[-8:-4])[0]
    return data[: len(data) - 8 - n], _Reader(data[len(data) - 8 - n: -8]).struct()


def write_file(path: Path, body: bytes, footer: list[list[Any]] | bytes) -> None:
    raw = footer if isinstance(footer, bytes) else write_struct(footer)
    path.write_bytes(body + raw + struct.pack("<I", len(raw)) + b"PAR1")


def field(fields: list[list[Any]], fid: int) -> list[Any]:
    """The ``[id, type, value]`` entry of field ``fid`` (KeyError if absent)."""
    for f in fields:
        if f[0] == fid:
            return f
    raise KeyError(fid)


def column_statistics(footer: list[list[Any]], group: int, column: int) -> list[list[Any]]:
    """The Statistics struct of one column chunk (FileMetaData.row_groups[g].columns[c].meta_data.statistics)."""
    rg = field(footer, 4)[2][1][group]
    chunk = field(rg, 1)[2][1][column]
    meta = field(chunk, 3)[2]
    return field(meta, 12)[2]  # type: ignore[no-any-return]
