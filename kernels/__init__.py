"""Fused Triton kernels of fastdiff and their PyTorch references (installed as ``fastdiff.kernels``).

``reference`` needs only torch. The kernel modules import triton and are loaded lazily by
:mod:`fastdiff.ops` when the triton backend is chosen.
"""
