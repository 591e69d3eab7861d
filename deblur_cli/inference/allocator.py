"""Keep freed memory in the process heap instead of handing it back to the OS after every image.

glibc's ``malloc`` serves every block above its mmap threshold (128 KiB, rising to at most
32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` on free. A 720p image through
``saphn-s`` allocates and frees full-resolution 16-channel tensors (59 MB each) every level, so
every such tensor is page-faulted and zeroed by the kernel anew, on every image. Measured on
this machine (2 threads, ``saphn-s``, 1280x720, warm runs): 1.50-1.56 s per image with glibc's
defaults, 1.13-1.18 s with :func:`keep_freed_memory`, for a peak resident memory of 1090 MB
instead of 1043 MB.

The usual fix is to preload another allocator (tcmalloc or jemalloc, as Intel's PyTorch CPU
guide does), which a pip-installed command cannot do for itself; ``mallopt`` gets the same
effect from inside the process. It is process-wide, so the library never calls it on import:
the ``deblur`` command calls it at start-up (it owns its process), and so do the benchmarks.
``DEBLUR_MALLOC=system`` in the environment turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``mallopt`` parameters, from glibc's ``malloc.h``.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap and are reused after free (larger ones, rare: only
#: whole-image buffers of very large untiled images, still use mmap).
MMAP_THRESHOLD = 1 << 30
#: Free memory at the top of the heap is only given back to the OS beyond this much.
TRIM_THRESHOLD = (1 << 31) - 1


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (see module docstring).

    Returns:
        True if both were set; False when turned off by ``DEBLUR_MALLOC=system``, on a platform
        without glibc (macOS, Windows, musl), or if glibc refused a value.
    """
    if os.environ.get("DEBLUR_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
