"""``sample_masked`` against its reference on shapes, dtypes, temperatures, scores, filters and scales
drawn by hypothesis (skipped where hypothesis is not installed, as on a bare GPU machine)."""
import pytest
import torch
from fastdiff import ops

from conftest import KERNEL_DEVICE as DEVICE
from conftest import requires_kernels
from test_kernels import _assert_same_draw, _sample_pair

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = requires_kernels


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 2), L=st.integers(1, 4), V=st.integers(1, 150),
    temperature=st.sampled_from([0.0, 0.3, 1.0, 2.5]),
    score=st.sampled_from(["confidence", "margin", "entropy"]),
    scale=st.sampled_from([0.01, 1.0, 30.0]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    top_k=st.sampled_from([None, 1, 5, 200]),
    top_p=st.sampled_from([None, 0.3, 0.9, 1.0]),
    seed=st.integers(0, 2**40),
)
def test_sample_masked_fuzz(B, L, V, temperature, score, scale, dtype, top_k, top_p, seed):
    g = torch.Generator().manual_seed(seed % 2**31)
    logits = (torch.randn(B, L, V, generator=g) * scale).to(dtype).to(DEVICE)
    mask = (torch.rand(B, L, generator=g) < 0.7).to(DEVICE)
    origin = torch.randint(0, L, (B,), generator=g)
    state = ops.make_rng_state(seed, B, DEVICE, counter=seed % 7, origin=origin)
    filters = {name: value for name, value in (("top_k", top_k), ("top_p", top_p)) if value is not None}
    _assert_same_draw(*_sample_pair(logits, mask, state, 64, temperature=temperature, score=score, **filters),
                      rtol=2e-4)
