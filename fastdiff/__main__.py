"""``python -m fastdiff``: a small end-to-end generation on a random-init model (no download).

Random weights give no text: this shows the sampler running, its timing and its canvas.
"""
import argparse
import time

import torch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fastdiff", description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--gen-length", type=int, default=48)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from transformers import RobertaConfig, RobertaForMaskedLM

    from fastdiff import Sampler

    torch.manual_seed(args.seed)
    model = RobertaForMaskedLM(RobertaConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=256,
                                             max_position_embeddings=258)).eval()
    sampler = Sampler(model, mask_token_id=4, steps=args.steps, temperature=0.8, top_p=0.95, seed=args.seed)
    prompt = torch.randint(5, 1000, (args.batch, 16))
    sampler.generate(prompt, gen_length=args.gen_length)  # warm-up
    start = time.perf_counter()
    out = sampler.generate(prompt, gen_length=args.gen_length)
    elapsed = time.perf_counter() - start
    print("random-init RoBERTa (2 layers, vocab 1000): random weights give no text, only token ids")
    print(f"{args.batch} x {args.gen_length} tokens in {out.nfe} steps: {elapsed * 1000:.1f} ms "
          f"({args.batch * args.gen_length / elapsed:.0f} tokens/s)")
    for row in out.sequences.tolist():
        print(" ".join(map(str, row)))


if __name__ == "__main__":
    main()
