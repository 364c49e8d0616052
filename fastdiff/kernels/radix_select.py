"""Top-k and top-p thresholds by radix selection on the logits' own bits (for ``sample_masked``).

Each logit maps to an integer key with the same order (:func:`load_chunk`: 16 bits for bf16 / fp16,
32 for fp32). One pass per 8-bit digit, most significant first, histograms the next digit of the keys
that share the digits chosen so far: counts for top-k, and for top-p the masses ``exp(z - max)`` (an
exact three-piece tf32 product with one-hot digits, which counts as well). :func:`kept_floor` returns
the smallest kept key.
"""
import triton
import triton.language as tl


@triton.jit
def _logit_key(loaded, raw, KEY: tl.constexpr):
    """Integer key of each logit with the logits' order, -0 and +0 tied.

    fp32: int64 in [0, 2**32); bf16 / fp16: int32 in [0, 2**16). ``loaded`` is the tensor as read,
    ``raw`` the same in fp32.
    """
    if KEY == 0:
        bits = (raw + 0.0).to(tl.int32, bitcast=True)
        signed = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)  # negative floats: flip the magnitude
        return signed.to(tl.int64) + 2147483648
    else:
        if KEY == 1:
            bits = (raw + 0.0).to(tl.int32, bitcast=True) >> 16  # a bf16 is the top half of its fp32
        else:
            bits = loaded.to(tl.int16, bitcast=True).to(tl.int32)
            bits = tl.where(bits == -32768, 0, bits)  # -0 -> +0
        signed = tl.where(bits >= 0, bits, bits ^ 0x7FFF)
        return signed + 32768


@triton.jit
def _key_logit(key, KEY: tl.constexpr):
    """The fp32 value of the logit whose key is ``key`` (the inverse of :func:`_logit_key`)."""
    if KEY == 0:
        signed = (key - 2147483648).to(tl.int32)
        return tl.where(signed >= 0, signed, signed ^ 0x7FFFFFFF).to(tl.float32, bitcast=True)
    else:
        signed = key.to(tl.int32) - 32768
        bits = tl.where(signed >= 0, signed, signed ^ 0x7FFF)
        if KEY == 1:
            return (bits << 16).to(tl.float32, bitcast=True)
        else:
            return bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def load_chunk(row_base, start, lead, V, suppress_ptr, n_suppress, t, KEY: tl.constexpr, BLOCK_V: tl.constexpr):
    """One chunk of a row read from its aligned base (``lead`` elements before the row starts).

    Returns the chunk's vocabulary ids, raw fp32 logits, ``z = raw / t``, the logits' keys, whether
    each can be drawn (inside the row, not suppressed, ``z`` finite) and whether any is NaN / +inf.
    A chunk wholly inside the row is read without a mask, so that its loads are 128-bit vectors
    whatever the vocabulary size; only the first and last chunks are masked.
    """
    idx = start + tl.arange(0, BLOCK_V)
    cols = idx - lead
    inside = (cols >= 0) & (cols < V)
    if (start >= lead) & (start + BLOCK_V <= V + lead):
        loaded = tl.load(row_base + idx)
    else:
        loaded = tl.load(row_base + idx, mask=inside, other=float("-inf"))
    raw = loaded.to(tl.float32)
    bad = tl.max(((raw != raw) | (raw == float("inf"))).to(tl.int32), axis=0)
    z = raw / t
    drawable = inside & (z > float("-inf")) & (z < float("inf"))
    for i in range(n_suppress):
        drawable = drawable & (cols != tl.load(suppress_ptr + i))
    return cols, raw, z, _logit_key(loaded, raw, KEY), drawable, bad


@triton.jit
def _digit(key, drawable, prefix, LEVEL: tl.constexpr, KEY_BITS: tl.constexpr):
    # the LEVEL-th 8-bit digit from the top of the drawable keys whose higher digits are `prefix`; else -1
    digit = ((key >> (KEY_BITS - 8 * (LEVEL + 1))) & 255).to(tl.int32)
    if LEVEL > 0:
        drawable = drawable & ((key >> (KEY_BITS - 8 * LEVEL)) == prefix.to(key.dtype))
    return tl.where(drawable, digit, -1)


@triton.jit
def _count_digits(row_base, lead, V, suppress_ptr, n_suppress, t, prefix,
                  LEVEL: tl.constexpr, KEY: tl.constexpr, KEY_BITS: tl.constexpr, BLOCK_V: tl.constexpr):
    """One pass: the histogram [256] int32 of the LEVEL-th digits of the keys under ``prefix``."""
    counts = tl.zeros((256,), tl.int32)
    for start in range(0, V + lead, BLOCK_V):
        _, _, _, key, drawable, _ = load_chunk(row_base, start, lead, V, suppress_ptr, n_suppress, t, KEY, BLOCK_V)
        digit = _digit(key, drawable, prefix, LEVEL, KEY_BITS)
        counts += tl.histogram(digit, 256, mask=digit >= 0)
    return counts


@triton.jit
def _tf32_head(x):
    # x with its mantissa cut to tf32's 10 bits: exact in a tf32 product, and x - head is exact in fp32
    return (x.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)


@triton.jit
def _weigh_digits(row_base, lead, V, suppress_ptr, n_suppress, t, m, prefix,
                  LEVEL: tl.constexpr, ONLINE_MAX: tl.constexpr, KEY: tl.constexpr, KEY_BITS: tl.constexpr,
                  MASS_BLOCK: tl.constexpr):
    """One pass: per LEVEL-th digit of the keys under ``prefix``, the count and the mass sum exp(z - m).

    Returns ``(counts [256] int32, masses [256] fp32, m)``. With ``ONLINE_MAX`` the pass also finds
    ``m``, the largest drawable ``z`` (the masses are rescaled as it grows); otherwise ``m`` is given.
    Digit ``d = 16 h + l`` is histogrammed as a product: rows ``16 j + h`` of ``A [64, K]`` hold the
    j-th tf32 piece of each weight (``w = w0 + w1 + w2`` exactly) and row ``48 + h`` a one, where the
    element's high nibble is ``h``; ``B [K, 16]`` is one-hot in the low nibble; ``A @ B`` sums them.
    """
    rows = tl.arange(0, 64)
    piece = rows[:, None] // 16
    nibbles = tl.arange(0, 16)
    acc = tl.zeros((64, 16), tl.float32)
    for start in range(0, V + lead, MASS_BLOCK):
        _, _, z, key, drawable, _ = load_chunk(row_base, start, lead, V, suppress_ptr, n_suppress, t, KEY,
                                                MASS_BLOCK)
        if ONLINE_MAX:
            new_m = tl.maximum(m, tl.max(tl.where(drawable, z, float("-inf")), axis=0))
            alpha = tl.where(new_m == float("-inf"), 1.0, tl.exp(m - new_m))
            acc = acc * tl.where(piece < 3, alpha, 1.0)
            m = new_m
        digit = _digit(key, drawable, prefix, LEVEL, KEY_BITS)
        w = tl.where(digit >= 0, tl.exp(z - m), 0.0)
        w0 = _tf32_head(w)
        rest = w - w0
        w1 = _tf32_head(rest)
        value = tl.where(piece == 0, w0[None, :],
                         tl.where(piece == 1, w1[None, :], tl.where(piece == 2, (rest - w1)[None, :], 1.0)))
        a = tl.where((rows[:, None] % 16) == (digit >> 4)[None, :], value, 0.0)  # digit -1: no row
        b = tl.where((digit & 15)[:, None] == nibbles[None, :], 1.0, 0.0)
        acc = tl.dot(a, b, acc, input_precision="tf32")
    by_piece = tl.reshape(acc, (4, 256))
    pieces = tl.arange(0, 4)[:, None]
    masses = tl.sum(tl.where(pieces < 3, by_piece, 0.0), axis=0)
    counts = tl.sum(tl.where(pieces == 3, by_piece, 0.0), axis=0).to(tl.int32)
    return counts, masses, m


@triton.jit
def _exact_masses(counts, prefix, t, m, KEY: tl.constexpr):
    # last digit: every key under `prefix` is one logit, so its mass is count * exp(logit / t - m)
    z = _key_logit(prefix * 256 + tl.arange(0, 256), KEY) / t
    return tl.where(counts > 0, counts.to(tl.float32) * tl.exp(z - m), 0.0)


@triton.jit
def _histograms(row_base, lead, V, suppress_ptr, n_suppress, t, m, prefix,
                LEVEL: tl.constexpr, LEVELS: tl.constexpr, KEY: tl.constexpr, KEY_BITS: tl.constexpr,
                BLOCK_V: tl.constexpr, MASS_BLOCK: tl.constexpr):
    """One pass: counts and masses of the LEVEL-th digits under ``prefix`` (LEVEL > 0, ``m`` known).

    Below the last digit the masses are weighed; on the last, a plain count gives them exactly.
    """
    if LEVEL < LEVELS - 1:
        counts, masses, _ = _weigh_digits(row_base, lead, V, suppress_ptr, n_suppress, t, m, prefix,
                                          LEVEL, False, KEY, KEY_BITS, MASS_BLOCK)
    else:
        counts = _count_digits(row_base, lead, V, suppress_ptr, n_suppress, t, prefix, LEVEL, KEY, KEY_BITS, BLOCK_V)
        masses = _exact_masses(counts, prefix, t, m, KEY)
    return counts, masses


@triton.jit
def _select_by_count(counts, need):
    # the largest digit d with #{digit >= d} >= need, and what is still needed inside it
    at_least = tl.cumsum(counts, axis=0, reverse=True)
    digits = tl.arange(0, 256)
    d = tl.max(tl.where(at_least >= need, digits, 0), axis=0)
    above = tl.sum(tl.where(digits > d, counts, 0), axis=0)
    return d, need - above


@triton.jit
def _select_by_mass(counts, masses, lowest, mass_above, target):
    # the smallest populated digit d >= lowest whose strictly larger keys hold less than target:
    # mass_above (keys above this histogram) + mass of digits > d; returns d and that mass
    strictly_above = mass_above + tl.cumsum(masses, axis=0, reverse=True) - masses
    digits = tl.arange(0, 256)
    candidate = (counts > 0) & (digits >= lowest) & (strictly_above < target)
    d = tl.min(tl.where(candidate, digits, 256), axis=0)
    d = tl.where(d == 256, tl.max(tl.where(counts > 0, digits, 0), axis=0), d)  # only by rounding
    return d, tl.sum(tl.where(digits == d, strictly_above, 0.0), axis=0)


@triton.jit
def _row_of(table, level):
    return tl.sum(tl.where(tl.arange(0, table.shape[0])[:, None] == level, table, 0), axis=0)


@triton.jit
def _with_row(table, level, row):
    return tl.where(tl.arange(0, table.shape[0])[:, None] == level, row[None, :], table)


@triton.jit
def kept_floor(row_base, lead, V, suppress_ptr, n_suppress, t, top_k_ptr, top_p_ptr,
               HAS_TOP_K: tl.constexpr, HAS_TOP_P: tl.constexpr, KEY: tl.constexpr, BLOCK_V: tl.constexpr,
               MASS_BLOCK: tl.constexpr):
    """The kept set of a row is ``{key >= floor}``: top-k, then the nucleus of what top-k keeps, each
    by radix selection, one 8-bit digit (one pass over the row) at a time. Returns the floor (0 without
    filters: every key is kept)."""
    KEY_BITS: tl.constexpr = 32 if KEY == 0 else 16
    LEVELS: tl.constexpr = KEY_BITS // 8
    floor_key = tl.zeros((), tl.int64)
    if HAS_TOP_K or HAS_TOP_P:
        m = tl.full((), float("-inf"), tl.float32)
        no_prefix = tl.zeros((), tl.int64)
        if HAS_TOP_P:
            counts, masses, m = _weigh_digits(row_base, lead, V, suppress_ptr, n_suppress, t, m, no_prefix,
                                              0, True, KEY, KEY_BITS, MASS_BLOCK)
        else:
            counts = _count_digits(row_base, lead, V, suppress_ptr, n_suppress, t, no_prefix,
                                   0, KEY, KEY_BITS, BLOCK_V)
            masses = tl.zeros((256,), tl.float32)
        total = tl.sum(masses, axis=0)
        # the histograms along the top-k search, which the nucleus search reuses while it follows it
        path_counts = tl.zeros((LEVELS, 256), tl.int32)
        path_masses = tl.zeros((LEVELS, 256), tl.float32)
        path_digits = tl.zeros((LEVELS,), tl.int32)
        if HAS_TOP_K:
            need = tl.minimum(tl.load(top_k_ptr), tl.sum(counts, axis=0))
            floor_key, total, path_counts, path_masses, path_digits = _top_k_search(
                row_base, lead, V, suppress_ptr, n_suppress, t, m, counts, masses, need, total,
                HAS_TOP_P, KEY, KEY_BITS, LEVELS, BLOCK_V, MASS_BLOCK)
        if HAS_TOP_P:
            top_p = tl.load(top_p_ptr)
            if top_p < 1.0:
                floor_key = _nucleus_search(row_base, lead, V, suppress_ptr, n_suppress, t, m, counts, masses,
                                            top_p * total, path_counts, path_masses, path_digits,
                                            HAS_TOP_K, KEY, KEY_BITS, LEVELS, BLOCK_V, MASS_BLOCK)
    return floor_key


@triton.jit
def _top_k_search(row_base, lead, V, suppress_ptr, n_suppress, t, m, counts, masses, need, total,
                  HAS_TOP_P: tl.constexpr, KEY: tl.constexpr, KEY_BITS: tl.constexpr, LEVELS: tl.constexpr,
                  BLOCK_V: tl.constexpr, MASS_BLOCK: tl.constexpr):
    # the k-th largest key: at each digit, the one where the count from the top reaches k (ties at
    # the k-th all kept). With top-p, the histograms along the way are kept, and the kept mass (total)
    # is the mass above the threshold plus that of its digit on the last level.
    prefix = tl.zeros((), tl.int64)
    above = tl.zeros((), tl.float32)  # mass of the keys above the current histogram
    path_counts = tl.zeros((LEVELS, 256), tl.int32)
    path_masses = tl.zeros((LEVELS, 256), tl.float32)
    path_digits = tl.zeros((LEVELS,), tl.int32)
    for level in tl.static_range(LEVELS):
        if level > 0:
            if HAS_TOP_P:
                counts, masses = _histograms(row_base, lead, V, suppress_ptr, n_suppress, t, m, prefix,
                                             level, LEVELS, KEY, KEY_BITS, BLOCK_V, MASS_BLOCK)
            else:
                counts = _count_digits(row_base, lead, V, suppress_ptr, n_suppress, t, prefix,
                                       level, KEY, KEY_BITS, BLOCK_V)
        d, need = _select_by_count(counts, need)
        if HAS_TOP_P:
            path_counts = _with_row(path_counts, level, counts)
            path_masses = _with_row(path_masses, level, masses)
            path_digits = tl.where(tl.arange(0, LEVELS) == level, d, path_digits)
            above += tl.sum(tl.where(tl.arange(0, 256) > d, masses, 0.0), axis=0)
            if level == LEVELS - 1:
                total = above + tl.sum(tl.where(tl.arange(0, 256) == d, masses, 0.0), axis=0)
        prefix = prefix * 256 + d
    return prefix, total, path_counts, path_masses, path_digits


@triton.jit
def _nucleus_search(row_base, lead, V, suppress_ptr, n_suppress, t, m, counts, masses, target,
                    path_counts, path_masses, path_digits,
                    HAS_TOP_K: tl.constexpr, KEY: tl.constexpr, KEY_BITS: tl.constexpr, LEVELS: tl.constexpr,
                    BLOCK_V: tl.constexpr, MASS_BLOCK: tl.constexpr):
    # the smallest key whose strictly larger kept keys hold less than target = top_p x the kept mass;
    # while its digits equal the top-k threshold's, the top-k histograms serve (no pass over the row)
    prefix = tl.zeros((), tl.int64)
    above = tl.zeros((), tl.float32)
    on_top_k_path = tl.full((), HAS_TOP_K, tl.int1)
    for level in tl.static_range(LEVELS):
        lowest = tl.zeros((), tl.int32)
        if HAS_TOP_K:
            k_digit = tl.sum(tl.where(tl.arange(0, LEVELS) == level, path_digits, 0), axis=0)
            lowest = tl.where(on_top_k_path, k_digit, 0)  # never below the top-k threshold
            if level > 0:
                if on_top_k_path:
                    counts = _row_of(path_counts, level)
                    masses = _row_of(path_masses, level)
                else:
                    counts, masses = _histograms(row_base, lead, V, suppress_ptr, n_suppress, t, m,
                                                 prefix, level, LEVELS, KEY, KEY_BITS, BLOCK_V, MASS_BLOCK)
        elif level > 0:
            counts, masses = _histograms(row_base, lead, V, suppress_ptr, n_suppress, t, m, prefix,
                                         level, LEVELS, KEY, KEY_BITS, BLOCK_V, MASS_BLOCK)
        d, above = _select_by_mass(counts, masses, lowest, above, target)
        if HAS_TOP_K:
            on_top_k_path = on_top_k_path & (d == k_digit)
        prefix = prefix * 256 + d
    return prefix
