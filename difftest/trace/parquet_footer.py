"""Opening an untrusted Parquet file without letting its footer take the process down.

A Parquet file ends with ``<footer> <u32 footer length> PAR1``; the footer is a Thrift
(compact protocol) ``FileMetaData``.  A damaged or hostile footer (lengths that run past the
file, fields repeated, lists claiming millions of entries, structures nested without end) can
make the Parquet library allocate without bound or abort the process (SIGABRT: no message, no
exit code 2).  So before the library sees a file:

1. :func:`check_footer` checks the frame (magic bytes, a footer length that fits in the file and
   under :data:`MAX_FOOTER`) and walks the footer's Thrift structure in pure Python: every length
   and count must fit in the bytes that remain, no field may appear twice in one structure,
   nesting is bounded, and the structure must end exactly where the footer does.  It reads only
   the footer's bytes, in linear time.
2. :func:`parse_in_child` then lets the library parse that footer in a helper process first (one
   forked helper per process, fed paths over a pipe): if the library still dies on it, the
   helper's death becomes an :class:`InputError` naming the file, and the next file gets a new
   helper.  Cost: ``bench/fuzz_inputs.py --cost`` (about 1-2 ms a file here; a fork per file was
   26 ms).  ``DIFFTEST_TRUST_PARQUET=1`` skips the helper (files you wrote yourself).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
from pathlib import Path
from typing import Any

from difftest.errors import InputError

MAGIC = b"PAR1"
MAX_FOOTER = 64 << 20  # bytes of footer (ours are a few KiB; 1,000 row groups x 50 columns ~ 10 MiB)
MAX_DEPTH = 32  # nesting of Thrift structures and containers (FileMetaData needs about 8)
CHILD_TIMEOUT = 60.0  # seconds the library may take to parse one footer in the child

# compact protocol types
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)


class _Bad(Exception):
    pass


def _varint(d: bytes, p: int) -> tuple[int, int]:
    """The varint at ``d[p]`` and the position after it."""
    out = shift = 0
    for _ in range(10):
        if p >= len(d):
            raise _Bad("ends inside a structure")
        b = d[p]
        p += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, p
        shift += 7
    raise _Bad("an integer longer than 10 bytes")


def _skip_value(d: bytes, p: int, t: int, depth: int) -> int:
    """The position after a value of type ``t`` at ``d[p]``, every length checked against ``len(d)``."""
    end = len(d)
    if t in (_TRUE, _FALSE):
        return p
    if t == _BYTE:
        p += 1
    elif t in (_I16, _I32, _I64):
        if p < end and d[p] < 0x80:  # (most are one byte)
            return p + 1
        _, p = _varint(d, p)
    elif t == _DOUBLE:
        p += 8
    elif t == _BINARY:
        n, p = _varint(d, p) if p < end and d[p] >= 0x80 else (d[p] if p < end else 0, p + 1)
        if n > end - p:
            raise _Bad(f"a string of {n} bytes runs past the footer")
        p += n
    elif t in (_LIST, _SET):
        if p >= end:
            raise _Bad("ends inside a structure")
        h = d[p]
        p += 1
        n, elem = h >> 4, h & 0x0F
        if n == 15:
            n, p = _varint(d, p)
        if elem in (_STOP, 13, 14, 15):
            raise _Bad(f"a list of unknown element type {elem}")
        least = 8 if elem == _DOUBLE else 1
        if n * least > end - p:
            raise _Bad(f"a list claims {n} elements in {end - p} bytes")
        if elem in (_TRUE, _FALSE, _BYTE, _DOUBLE):
            p += n * least
        elif elem == _STRUCT:
            if depth >= MAX_DEPTH:
                raise _Bad(f"structures nested more than {MAX_DEPTH} deep")
            for _ in range(n):
                p = _skip_struct(d, p, depth + 1)
        else:
            for _ in range(n):
                p = _skip_value(d, p, elem, depth + 1)
    elif t == _MAP:
        n, p = _varint(d, p)
        if n:
            if p >= end:
                raise _Bad("ends inside a structure")
            kv = d[p]
            p += 1
            if 2 * n > end - p:
                raise _Bad(f"a map claims {n} entries in {end - p} bytes")
            for _ in range(n):
                p = _skip_value(d, p, kv >> 4, depth + 1)
                p = _skip_value(d, p, kv & 0x0F, depth + 1)
    elif t == _STRUCT:
        if depth >= MAX_DEPTH:
            raise _Bad(f"structures nested more than {MAX_DEPTH} deep")
        p = _skip_struct(d, p, depth + 1)
    else:
        raise _Bad(f"unknown field type {t}")
    if p > end:
        raise _Bad("a value runs past the footer")
    return p


def _skip_struct(d: bytes, p: int, depth: int) -> int:
    """The position after the structure at ``d[p]``; no field may appear twice in it."""
    end = len(d)
    seen: set[int] = set()
    last = 0
    while True:
        if p >= end:
            raise _Bad("ends inside a structure")
        h = d[p]
        p += 1
        t = h & 0x0F
        if t == _STOP:
            return p
        if h >> 4:
            fid = last + (h >> 4)
        else:
            z, p = _varint(d, p)
            fid = (z >> 1) ^ -(z & 1)
        if fid in seen:
            raise _Bad(f"field {fid} appears twice in one structure")
        seen.add(fid)
        last = fid
        p = _skip_value(d, p, t, depth)


def parquet_source(path: str | os.PathLike[str]) -> Any:
    """What to hand the Parquet library for ``path``: the path itself, or an open binary file when the
    name is not UTF-8 (the library encodes paths as UTF-8 and would call such a valid file unreadable)."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return open(os.fsencode(text), "rb")  # (owned by the ParquetFile reading it)
    return text


def check_footer(path: str, size: int | None = None) -> None:
    """InputError unless ``path`` ends with a well-framed, well-formed Parquet footer."""
    try:
        with open(path, "rb") as fh:
            end = fh.seek(0, os.SEEK_END) if size is None else size
            if end < 12:
                raise InputError(path, f"not a readable Parquet file ({end} bytes; the smallest has 12)")
            fh.seek(0)
            head = fh.read(4)
            fh.seek(end - 8)
            tail = fh.read(8)
            if head != MAGIC or tail[4:] != MAGIC:
                what = "an encrypted Parquet footer" if tail[4:] == b"PARE" else "no Parquet magic bytes"
                raise InputError(path, f"not a readable Parquet file ({what})")
            n = struct.unpack("<I", tail[:4])[0]
            if n == 0 or n > end - 12:
                raise InputError(path, f"not a readable Parquet file (footer length {n} does not fit in a file of {end} bytes)")
            if n > MAX_FOOTER:
                raise InputError(path, f"not a readable Parquet file (a footer of {n} bytes; at most {MAX_FOOTER})")
            fh.seek(end - 8 - n)
            footer = fh.read(n)
    except OSError as exc:
        raise InputError(path, f"cannot read the file ({exc.strerror or exc})") from None
    try:
        pos = _skip_struct(footer, 0, 0)
    except _Bad as exc:
        raise InputError(path, f"not a readable Parquet file (damaged footer: {exc})") from None
    except RecursionError:
        raise InputError(path, "not a readable Parquet file (damaged footer: structures nested too deeply)") from None
    if pos != n:
        raise InputError(path, f"not a readable Parquet file (damaged footer: it ends at byte {pos} of {n})")


class _FooterProbe:
    """A forked helper process that parses footers for us, one request at a time.

    Forking once per file cost 26 ms here (a process with pyarrow loaded has a large address space
    to copy); one helper per process, kept for its life, costs a pipe round trip per file and a
    fork only after a file killed it.  A worker process forked from ours starts its own helper.
    """

    def __init__(self) -> None:
        self.pid = 0
        self.owner = 0
        self.req = self.resp = -1

    def _start(self) -> None:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the helper: answer requests until the parent goes away
            code = 0
            try:
                os.close(req_w)
                os.close(resp_r)
                _serve(req_r, resp_w)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(req_r)
        os.close(resp_w)
        self.pid, self.owner, self.req, self.resp = pid, os.getpid(), req_w, resp_r

    def _stop(self) -> int | None:
        """Forget the helper; its wait status if it has ended."""
        for fd in (self.req, self.resp):
            with contextlib.suppress(OSError):
                os.close(fd)
        status = None
        if self.owner == os.getpid() and self.pid:
            try:
                done, st = os.waitpid(self.pid, os.WNOHANG)
                if not done:
                    os.kill(self.pid, signal.SIGKILL)
                    done, st = os.waitpid(self.pid, 0)
                status = st
            except (ChildProcessError, ProcessLookupError):
                pass
        self.pid, self.req, self.resp = 0, -1, -1
        return status

    def check(self, path: str) -> None:
        if self.pid and self.owner != os.getpid():  # inherited from the process that forked us
            for fd in (self.req, self.resp):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.pid = 0
        if not self.pid:
            self._start()
        raw = os.fsencode(path)
        try:
            os.write(self.req, struct.pack("<I", len(raw)) + raw)
            ready, _, _ = select.select([self.resp], [], [], CHILD_TIMEOUT)
            answer = os.read(self.resp, 1) if ready else None
        except OSError:
            answer = b""
        if answer == b"0" or answer == b"1":  # parsed, or the library raised (the caller's own parse says why)
            return
        status = self._stop()
        if answer is None:
            raise InputError(path, f"the Parquet library took over {CHILD_TIMEOUT:.0f} s to read the footer")
        if status is not None and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            raise InputError(path, f"not a readable Parquet file (the Parquet library crashed reading its footer: {name})")
        raise InputError(path, "the Parquet library failed reading this file's footer (its process ended)")


def _read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def _serve(req: int, resp: int) -> None:
    import faulthandler

    import pyarrow.parquet as pq

    faulthandler.disable()  # (its death is reported by the parent, as this file's error; no dump on stderr)
    try:  # nor may the library's own abort message reach the user's terminal
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    except OSError:
        pass

    while True:
        try:
            n = struct.unpack("<I", _read_exact(req, 4))[0]
            path = os.fsdecode(_read_exact(req, n))
        except EOFError:
            return
        ok = b"1"
        try:
            pf = pq.ParquetFile(parquet_source(path))
            pf.schema_arrow  # noqa: B018 (the schema conversion is where damaged footers bite)
            md = pf.metadata
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                for c in range(rg.num_columns):
                    rg.column(c).statistics  # noqa: B018
            ok = b"0"
        except Exception:
            pass
        os.write(resp, ok)


_PROBE = _FooterProbe()


def parse_in_child(path: str) -> None:
    """Let the Parquet library parse ``path``'s footer in a helper process first; InputError if it
    dies there (a signal: the library aborted) or hangs.  Where fork is missing, nothing is checked."""
    if hasattr(os, "fork") and os.environ.get("DIFFTEST_TRUST_PARQUET") != "1":
        _PROBE.check(path)


def open_checked(path: Path) -> None:
    """Both checks, in order (see the module docstring)."""
    check_footer(str(path))
    parse_in_child(str(path))
