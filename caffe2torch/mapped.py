"""Read-only memory mappings of model files: blobs copied out of them without mapping their pages, and the
pages a reader did touch given back.

A caffemodel is read as a memory-mapped file (caffe_proto.weights): its blobs are numpy views of the
mapping, so reading costs nothing until a value is used. But every page of a file mapping that the process
touches counts in its resident set for as long as the mapping lives, and a load copies every blob into a
parameter: copying through the views would hold the model twice (once as the file's pages, once as the
parameters). So :func:`copy_into` reads a view's bytes from the file with ``pread`` straight into the
destination (one copy, from the page cache; no page of the mapping is touched), and :func:`release_range`
gives back what a reader touched (``madvise(MADV_DONTNEED)``, which for a shared read-only file mapping
loses nothing: the pages stay in the page cache and every view stays valid, reading it faults them back in).

Only mappings made by :func:`map_file` are read this way or given back: ``MADV_DONTNEED`` on a private
(copy-on-write) mapping someone else made would throw away their changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import weakref

import numpy as np

__all__ = ["map_file", "copy_into", "release_range"]

# The read-only shared mappings made by map_file -> a descriptor of their file (closed with the mapping).
_MAPPINGS: "weakref.WeakKeyDictionary[mmap.mmap, int]" = weakref.WeakKeyDictionary()
_CAN_RELEASE = hasattr(mmap, "MADV_DONTNEED") and hasattr(mmap.mmap, "madvise")
_CAN_PREAD = hasattr(os, "preadv")
_MAX_READ = 1 << 30  # bytes per pread call (Linux returns at most 2 GiB - 4 KiB from one)
_HUGE_PAGES_FROM = 4 << 20  # destinations this large are offered transparent huge pages (as numpy does)


def _libc_madvise():  # type: ignore[no-untyped-def]
    """libc's madvise, for memory Python did not map (a tensor's), where transparent huge pages exist."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return madvise


_MADVISE = _libc_madvise()


def map_file(fileno: int) -> mmap.mmap:
    """The whole open file ``fileno`` mapped read-only and shared (it must not be empty)."""
    mapped = mmap.mmap(fileno, 0, access=mmap.ACCESS_READ)
    descriptor = os.dup(fileno)
    _MAPPINGS[mapped] = descriptor
    weakref.finalize(mapped, os.close, descriptor)
    return mapped


def release_range(mapped, start: int = 0, end: int | None = None) -> None:
    """Give back the pages of ``mapped[start:end]`` (rounded out to whole pages; all of it by default) if it
    is one of ours.

    The bytes stay readable; the pages merely leave this process's resident set until touched again.
    Anything that is not a mapping made by :func:`map_file` (``bytes``, a caller's own mmap) is left alone,
    as is every mapping where the platform has no ``madvise`` (Windows).
    """
    if not _CAN_RELEASE or not _is_ours(mapped) or mapped.closed:
        return
    end = len(mapped) if end is None else end
    page = mmap.PAGESIZE
    first = start // page * page
    last = min(-(-end // page) * page, len(mapped))
    if last > first:
        with contextlib.suppress(OSError, ValueError):  # a hint: refusing it changes nothing but memory
            mapped.madvise(mmap.MADV_DONTNEED, first, last - first)


def copy_into(out: np.ndarray, array: np.ndarray) -> None:
    """``out[...] = array`` (``out``: a C-contiguous array of ``array``'s size), converting to ``out``'s dtype.

    When ``array`` is a view of one of our mappings holding exactly ``out``'s bytes, they are read from the
    file with ``pread`` instead of through the mapping: the same bytes (both come from the page cache), but
    no page of the mapping enters the resident set. Anything else is copied by numpy; pages of one of our
    mappings touched that way are given back afterwards.
    """
    out = out.reshape(array.shape)
    located = _locate(array)
    if located is None:
        np.copyto(out, array, casting="unsafe")
        return
    mapped, offset = located
    if _CAN_PREAD and array.dtype == out.dtype and array.flags.c_contiguous:
        _offer_huge_pages(out)
        done = _pread_into(_MAPPINGS[mapped], memoryview(out.reshape(-1)).cast("B"), offset)
        if done == array.nbytes:
            return
        # The file is shorter than when it was mapped: copy as the view shows it (as numpy would have).
    np.copyto(out, array, casting="unsafe")
    release_range(mapped, offset, offset + array.nbytes)


def _offer_huge_pages(out: np.ndarray) -> None:
    """Ask for transparent huge pages under a large destination about to be written.  Filling fresh memory
    is mostly the kernel faulting it in page by page: SENet-154's 440 MiB of blobs took 0.23 s in 4 KiB
    pages and 0.14 s with this hint on a 2-core VM (the copy itself, 0.04 s).  A hint: refused, it changes
    nothing."""
    if _MADVISE is None or out.nbytes < _HUGE_PAGES_FROM:
        return
    page = mmap.PAGESIZE
    start = -(-out.ctypes.data // page) * page
    end = (out.ctypes.data + out.nbytes) // page * page
    if end > start:
        _MADVISE(start, end - start, mmap.MADV_HUGEPAGE)


def _pread_into(descriptor: int, target: memoryview, offset: int) -> int:
    """Read ``len(target)`` bytes at ``offset`` into ``target``; returns how many there were."""
    done = 0
    while done < len(target):
        count = os.preadv(descriptor, [target[done : done + _MAX_READ]], offset + done)
        if count <= 0:
            break
        done += count
    return done


def _is_ours(mapped) -> bool:
    try:
        return mapped in _MAPPINGS
    except TypeError:  # not weakly referenceable (bytes): not a mapping of ours
        return False


def _locate(array: np.ndarray) -> tuple[mmap.mmap, int] | None:
    """(our mapping, byte offset) of a contiguous view of one of our mappings, else None."""
    if array.size == 0 or not (array.flags.c_contiguous or array.flags.f_contiguous):
        return None
    owner = array.base
    while owner is not None and not isinstance(owner, mmap.mmap):
        owner = owner.obj if isinstance(owner, memoryview) else getattr(owner, "base", None)
    if owner is None or not _is_ours(owner) or owner.closed:
        return None
    return owner, array.ctypes.data - np.frombuffer(owner, np.uint8, 1).ctypes.data
