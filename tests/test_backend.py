"""Backend choice and version checks (fastdiff.backend)."""
import pytest
import torch

from fastdiff import backend


def test_auto_picks_torch_on_cpu_and_names_are_checked():
    assert backend.resolve_backend("auto", torch.device("cpu")) == "torch"
    assert backend.resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="backend"):
        backend.resolve_backend("cuda", "cpu")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    if backend.triton_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert backend.resolve_backend("triton", "cpu") == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        backend.resolve_backend("triton", "cpu")


def test_auto_uses_triton_for_cuda_tensors_when_available(monkeypatch):
    monkeypatch.setattr(backend, "triton_available", lambda: True)
    assert backend.resolve_backend("auto", "cuda") == "triton"
    monkeypatch.setattr(backend, "triton_available", lambda: False)
    assert backend.resolve_backend("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match="backend='triton'"):
        backend.resolve_backend("triton", "cuda")


@pytest.mark.parametrize("text,expected", [("2.13.0+cpu", (2, 13, 0)), ("3.6.0", (3, 6, 0)),
                                           ("2.11.0a0+git1234", (2, 11, 0)), ("5.17.0.dev0", (5, 17, 0))])
def test_version_parsing(text, expected):
    assert backend._version_tuple(text) == expected


def test_cuda_graphs_need_cuda():
    assert not backend.cuda_graphs_supported("cpu")
