"""Counter-based random numbers for the kernels: the Triton twin of ``reference.uniform_noise``.

The state is an int64 ``[B, 3]`` device tensor, one ``(seed, counter, origin)`` row per batch row. A
draw is addressed by ``(seed_b, counter_b, stream, index, col)``. The kernels read the state inside the
launch, so a captured CUDA graph that advances the counter on the device draws fresh noise at every
replay. Seed, counter, stream and index are folded into two 32-bit keys; every offset stays 32-bit
whatever ``B * L * V`` is.
"""
import triton
import triton.language as tl

from fastdiff.kernels import utils

# a @triton.jit body may read module globals only when they are constexprs
_HASH_MUL1 = tl.constexpr(utils.HASH_MUL1)
_HASH_MUL2 = tl.constexpr(utils.HASH_MUL2)
_KEY_B_SALT = tl.constexpr(utils.KEY_B_SALT)


@triton.jit
def _hash32(x):
    # lowbias32 on uint32: xor-shift / multiply rounds, multiplications wrap mod 2**32
    x = x ^ (x >> 16)
    x = x * tl.full((), _HASH_MUL1, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full((), _HASH_MUL2, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def row_keys(rng_ptr, row, index, STREAM_SALT: tl.constexpr):
    """The two uint32 keys of ``index`` in batch row ``row`` of the state at ``rng_ptr``."""
    seed = tl.load(rng_ptr + row * 3)
    counter = tl.load(rng_ptr + row * 3 + 1)
    k = _hash32(seed.to(tl.uint32) ^ tl.full((), STREAM_SALT, tl.uint32))
    k = _hash32(k ^ (seed >> 32).to(tl.uint32))
    k = _hash32(k + counter.to(tl.uint32))
    key_a = _hash32(k ^ index.to(tl.uint32))
    key_b = _hash32(key_a + tl.full((), _KEY_B_SALT, tl.uint32))
    return key_a, key_b


@triton.jit
def position_keys(rng_ptr, row, STREAM_SALT: tl.constexpr):
    """The keys of the per-position ops (index 0): their columns are positions from the row's origin."""
    return row_keys(rng_ptr, row, tl.zeros((), tl.int32), STREAM_SALT)


@triton.jit
def row_origin(rng_ptr, row):
    """Batch row ``row``'s origin: noise positions count from it (its first real token)."""
    return tl.load(rng_ptr + row * 3 + 2).to(tl.int32)


@triton.jit
def uniform(key_a, key_b, cols):
    """Uniform fp32 in (0, 1): 23 random bits plus a half, exact in fp32."""
    bits = _hash32(_hash32(cols.to(tl.uint32) ^ key_a) + key_b)
    return ((bits >> 9).to(tl.float32) + 0.5) * (1.0 / 8388608.0)


@triton.jit
def gumbel(key_a, key_b, cols):
    """Standard Gumbel noise -log(-log u)."""
    return -tl.log(-tl.log(uniform(key_a, key_b, cols)))
