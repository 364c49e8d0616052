"""Shared fixtures. Without CUDA, TRITON_INTERPRET is set here, before any kernel module is imported,
so that the Triton kernels run on the CPU through the interpreter; with CUDA they compile for the GPU."""
import os
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from fastdiff.backend import interpreter_enabled, triton_available  # noqa: E402

MASK_ID = 3


class OracleModel:
    """A model whose logits ignore the context: position ``l`` of every row gets ``table[l]``
    (or ``table`` itself when it is one vector), so every distribution is known in advance."""

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.calls = 0
        self.inputs = []

    def __call__(self, input_ids, attention_mask=None):
        self.calls += 1
        self.inputs.append(input_ids.clone())
        B, L = input_ids.shape
        table = self.table if self.table.dim() == 2 else self.table.expand(L, -1)
        return table[:L].expand(B, L, -1).clone()


@pytest.fixture
def tiny_roberta():
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(1234)
    config = RobertaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=128, max_position_embeddings=130, pad_token_id=1)
    return RobertaForMaskedLM(config).eval()


@pytest.fixture
def fresh_seed(request):
    """The test's seed: fixed by default (derived from the test's id, so tests differ from each other
    but not from run to run); ``FASTDIFF_FRESH_SEEDS=1`` draws a new one each run, and
    ``FASTDIFF_TEST_SEED=N`` replays N. Printed, so a failing test shows the seed to replay it with."""
    if os.environ.get("FASTDIFF_TEST_SEED"):
        seed = int(os.environ["FASTDIFF_TEST_SEED"])
    elif os.environ.get("FASTDIFF_FRESH_SEEDS", "0") not in ("", "0"):
        seed = int.from_bytes(os.urandom(4), "little")
    else:
        seed = zlib.crc32(request.node.nodeid.encode())
    print(f"seed={seed} (replay: FASTDIFF_TEST_SEED={seed})")
    return seed


def requires_cuda(test):
    """Mark a CUDA test: ``pytest -m cuda`` selects it, and it is skipped without a CUDA device."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_kernels = pytest.mark.skipif(
    not (triton_available() and (torch.cuda.is_available() or interpreter_enabled())),
    reason="needs Triton with CUDA, or TRITON_INTERPRET=1 on the CPU",
)
