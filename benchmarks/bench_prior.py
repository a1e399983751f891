#!/usr/bin/env python
"""
The transformer prior's training step and sampling against plain PyTorch.

1. **Training step.** pyprobvae's step (``Trainer.step`` with the ``CodeNLL``
   objective that ``train_prior`` descends on, over a
   :class:`~pyprobvae.priors.TransformerPrior`) against a hand-written causal
   transformer of the same architecture in plain PyTorch (the nanoGPT
   layout: embeddings, pre-norm blocks of ``scaled_dot_product_attention``
   with ``is_causal=True`` and a GELU MLP, a final LayerNorm and a linear
   head; loss ``cross_entropy`` summed over positions, mean over the batch;
   Adam) and against the same network built from
   ``torch.nn.TransformerEncoder`` with a causal mask (what the prior used
   before). Every contender starts from the same weights and sees the same
   batches; before timing, a check that pyprobvae's loss and gradients equal
   the hand-written ones. The default size is the workload that motivated the
   benchmark: the 7x7 = 49 codes per image of a 28x28 VQ-VAE with 64 codes,
   batch 128, ``d_model`` 128, 4 heads, 2 layers, dropout 0.1.
2. **Sampling.** Drawing codes with the key/value cache
   (``TransformerPrior.sample``) against rerunning the network on the whole
   prefix for every position (no cache), at the same settings.

Usage::

    python benchmarks/bench_prior.py [--quick] [--positions L] [--codes K] [--batch B] [--threads N] [--device D] [--json PATH]
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from pyprobvae.infer.loop import RandomState, Trainer
from pyprobvae.infer.prior_training import CodeNLL, PriorTrainConfig
from pyprobvae.priors import TransformerPrior, TransformerPriorConfig

try:
    import _harness as harness
except ImportError:  # imported as benchmarks.bench_prior
    from benchmarks import _harness as harness

LR = 1e-3
# (warm-up steps per contender, timed rounds, steps per block)
TIMING = {"full": (10, 11, 5), "quick": (2, 3, 2)}
SAMPLES = {"full": 256, "quick": 16}


class HandBlock(nn.Module):
    def __init__(self, width, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.attention_norm = nn.LayerNorm(width)
        self.attention = nn.Module()
        self.attention.qkv = nn.Linear(width, 3 * width)
        self.attention.out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout))

    def forward(self, h):
        batch, length, width = h.shape
        q, k, v = self.attention.qkv(self.attention_norm(h)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = self.attention.out(y.transpose(1, 2).reshape(batch, length, width))
        h = h + F.dropout(y, self.dropout, self.training)
        return h + self.mlp(self.mlp_norm(h))


class HandPrior(nn.Module):
    """The prior's architecture written out in plain PyTorch (same parameter names, so weights copy over)."""

    def __init__(self, codes, positions, width, heads, layers, dropout):
        super().__init__()
        self.dropout = dropout
        self.token_embedding = nn.Embedding(codes, width)
        self.start_token = nn.Parameter(torch.zeros(width))
        self.position_embedding = nn.Parameter(torch.zeros(positions, width))
        self.blocks = nn.ModuleList(HandBlock(width, heads, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, codes)

    def loss(self, codes):
        inputs = torch.cat([self.start_token.expand(len(codes), 1, -1), self.token_embedding(codes[:, :-1])], 1)
        h = F.dropout(inputs + self.position_embedding, self.dropout, self.training)
        for block in self.blocks:
            h = block(h)
        logits = self.head(self.final_norm(h))
        return F.cross_entropy(logits.transpose(1, 2), codes, reduction="none").sum(1).mean()


class EncoderLayerPrior(nn.Module):
    """The same sizes through ``nn.TransformerEncoder`` with a causal mask (the prior's implementation before SDPA)."""

    def __init__(self, codes, positions, width, heads, layers, dropout):
        super().__init__()
        self.token_embedding = nn.Embedding(codes, width)
        self.start_token = nn.Parameter(torch.zeros(width))
        self.position_embedding = nn.Parameter(torch.zeros(positions, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.head = nn.Linear(width, codes)

    def loss(self, codes):
        inputs = torch.cat([self.start_token.expand(len(codes), 1, -1), self.token_embedding(codes[:, :-1])], 1)
        length = inputs.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=inputs.device)
        logits = self.head(self.encoder(inputs + self.position_embedding, mask=mask, is_causal=True))
        return F.cross_entropy(logits.transpose(1, 2), codes, reduction="none").sum(1).mean()


def _check_equal(prior, hand, codes):
    """pyprobvae's per-sequence loss and gradients equal the hand-written ones (dropout off)."""
    prior.eval(), hand.eval()
    mine = -prior.log_prob(codes).mean()
    theirs = hand.loss(codes)
    mine.backward(), theirs.backward()
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-4)
    grads = dict(hand.named_parameters())
    for name, parameter in prior.named_parameters():
        torch.testing.assert_close(parameter.grad, grads[name].grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    prior.zero_grad(set_to_none=True), hand.zero_grad(set_to_none=True)
    prior.train(), hand.train()
    return float(mine.detach())


def time_training(args, mode):
    device = args.torch_device
    config = TransformerPriorConfig(args.codes, args.positions, d_model=args.width, num_heads=args.heads, num_layers=args.layers)
    torch.manual_seed(args.seed)
    prior = TransformerPrior(config).to(device)
    hand = HandPrior(args.codes, args.positions, args.width, args.heads, args.layers, config.dropout).to(device)
    hand.load_state_dict(prior.state_dict())
    encoder_layers = EncoderLayerPrior(args.codes, args.positions, args.width, args.heads, args.layers, config.dropout).to(device)
    generator = torch.Generator().manual_seed(args.seed)
    batches = [torch.randint(args.codes, (args.batch, args.positions), generator=generator).to(device) for _ in range(8)]
    loss = _check_equal(prior, hand, batches[0])
    print(f"same network: pyprobvae's loss and gradients equal the hand-written ones (loss {loss:.4f} nats per sequence)")

    loop = PriorTrainConfig(batch_size=args.batch, lr=LR, device=str(device), seed=args.seed)
    trainer = Trainer(CodeNLL(prior), loop, RandomState(args.seed, device))

    def plain(module):
        optimizer = torch.optim.Adam(module.parameters(), lr=LR)

        def step(i):
            loss = module.loss(batches[i % len(batches)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    def pyprobvae_step(i):
        trainer.step(batches[i % len(batches)])

    def after(name):
        if name == "pyprobvae":
            trainer.check(0)  # the loop reads its window back at the log interval

    warmup, rounds, steps = TIMING[mode]
    harness.settle()
    timing = harness.interleaved(
        {"hand-written (SDPA)": plain(hand), "pyprobvae": pyprobvae_step, "nn.TransformerEncoder": plain(encoder_layers)},
        rounds=rounds, steps=steps, warmup=warmup, reference="hand-written (SDPA)", after=after, device=device,
    )
    harness.print_timing(timing, title=f"1. Training step on {device}: batch {args.batch} x {args.positions} codes of {args.codes}, "
                         f"d_model {args.width}, {args.heads} heads, {args.layers} layers")
    return timing


def time_sampling(args, mode):
    device = args.torch_device
    config = TransformerPriorConfig(args.codes, args.positions, d_model=args.width, num_heads=args.heads, num_layers=args.layers)
    torch.manual_seed(args.seed)
    prior = TransformerPrior(config).to(device).eval()
    count = SAMPLES[mode]

    def cached(i):
        prior.sample(count)

    @torch.no_grad()
    def uncached(i):
        codes = torch.empty(count, 0, dtype=torch.long, device=device)
        for _ in range(args.positions):
            logits = prior.logits(prior.inputs(codes))[:, -1]
            codes = torch.cat([codes, torch.multinomial(torch.softmax(logits, -1), 1)], 1)

    harness.settle()
    timing = harness.interleaved({"no cache": uncached, "key/value cache": cached}, rounds=5 if mode == "full" else 2,
                                 steps=1, warmup=2, reference="no cache", device=device)
    harness.print_timing(timing, title=f"2. Drawing {count} sequences of {args.positions} codes (ms per batch of draws)")
    return timing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser, quick="smoke run: a few steps (< 30 s)")
    parser.add_argument("--positions", type=int, default=49, help="codes per sequence (default 49: a 7x7 grid)")
    parser.add_argument("--codes", type=int, default=64, help="codebook size (default 64)")
    parser.add_argument("--batch", type=int, default=128, help="sequences per step (default 128)")
    parser.add_argument("--width", type=int, default=128, help="d_model (default 128)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--layers", type=int, default=2, help="layers (default 2)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    with harness.report_stream(args.json):
        env = harness.start(args)
        results = {"environment": env, "training": time_training(args, mode), "sampling": time_sampling(args, mode)}
        harness.finish(args, results)


if __name__ == "__main__":
    main()
