"""Triton's autotuner, with each winning configuration kept on disk across processes.

``triton.autotune(..., cache_results=True)`` (Triton >= 3.2) writes the configuration it picks for
each tuning key to Triton's cache directory (``TRITON_CACHE_DIR``, default ``~/.triton/cache``),
keyed by the kernel's source, the tuning key's values and the GPU target; a later process meets
that shape and loads the winner instead of timing every configuration again. ``bigkern tune``
therefore leaves the Triton kernels tuned for the shapes it ran, on that GPU. With an older
Triton the autotuner searches in every process, as before.
"""

from __future__ import annotations

import inspect

import triton

CACHES_RESULTS = "cache_results" in inspect.signature(triton.autotune).parameters


def autotune(configs, key, **kwargs):
    """``triton.autotune`` with ``cache_results=True`` where this Triton has it."""
    if CACHES_RESULTS:
        kwargs["cache_results"] = True
    return triton.autotune(configs, key=key, **kwargs)
