"""What a captured CUDA graph forbids, checked on the CPU: no host copies of parameters during a
capture, and no op in the denoising step that may synchronise (``torch.isin``)."""
import pytest
import torch

from conftest import OracleModel, requires_kernels
from fastdiff import Sampler


@requires_kernels
def test_parameter_tensors_on_another_device_are_refused_during_a_capture(monkeypatch):
    from fastdiff.kernels.utils import as_device_scalar

    moved = as_device_scalar(torch.tensor(0.5, dtype=torch.float64), torch.float32, "cpu", "temperature")
    assert moved.device.type == "cpu" and moved.dtype == torch.float32 and moved.shape == (1,)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(ValueError, match="temperature is a tensor on meta"):
        as_device_scalar(torch.tensor(0.5, device="meta"), torch.float32, "cpu", "temperature")


def test_the_denoising_step_never_calls_isin(monkeypatch):
    table = torch.randn(16, 40)
    table[:, 3] = -30.0  # the mask token is never likely
    expected = Sampler(OracleModel(table), 3, steps=8, eos_token_id=7, defer_token_ids=[9], temperature=1.0,
                       seed=0, backend="torch").generate(torch.tensor([[5, 6]]), gen_length=8)

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.isin in the denoising step")

    monkeypatch.setattr(torch, "isin", forbidden)
    out = Sampler(OracleModel(table), 3, steps=8, eos_token_id=7, defer_token_ids=[9], temperature=1.0, seed=0,
                  backend="torch").generate(torch.tensor([[5, 6]]), gen_length=8)
    assert torch.equal(out.sequences, expected.sequences)
