"""Fused Triton kernels of fastdiff and their PyTorch references: one kernel per file with its launcher,
the references in ``reference``, shared constants and launch settings in ``utils``.

``reference`` and ``utils`` need only torch. The kernel modules import triton and are loaded lazily by
:mod:`fastdiff.ops` when the triton backend is chosen.
"""
