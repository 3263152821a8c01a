"""The PyTorch reference for scripts/bench-train.sh: the same llama forward
with rank-R LoRA on all seven projections (frozen f32 base weights read and
dequantized from the same GGUF with the `gguf` package), the same token ids
and loss, forward + backward per step. Prints one JSON line.

Usage: python bench_train_torch.py MODEL [SEQ_LEN] [STEPS] [RANK] [THREADS]
"""

import json
import sys
import time

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize

TARGETS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]


def main():
    path = sys.argv[1]
    seq_len, steps, rank, threads = (
        int(a) if a is not None else d
        for a, d in zip(
            (sys.argv[i] if len(sys.argv) > i else None for i in range(2, 6)),
            (128, 3, 16, 1),
        )
    )
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    reader = GGUFReader(path)

    def kv(key, default=None):
        f = reader.fields.get(key)
        if f is None:
            return default
        return f.parts[f.data[0]][0].item()

    n_layer = kv("llama.block_count")
    n_embd = kv("llama.embedding_length")
    n_head = kv("llama.attention.head_count")
    n_head_kv = kv("llama.attention.head_count_kv", n_head)
    eps = kv("llama.attention.layer_norm_rms_epsilon")
    base = kv("llama.rope.freq_base", 10000.0)
    hd = n_embd // n_head
    tensors = {t.name: t for t in reader.tensors}

    def load(name):
        t = tensors[name]
        a = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape.tolist())]
        return torch.from_numpy(np.ascontiguousarray(a.reshape(shape)))

    embd = load("token_embd.weight")
    out_w = load("output.weight") if "output.weight" in tensors else embd
    out_norm = load("output_norm.weight")
    layers = []
    lora = []
    scale = 2.0 * rank / rank
    for i in range(n_layer):
        layer = {s: load(f"blk.{i}.{s}.weight") for s in TARGETS}
        layer["attn_norm"] = load(f"blk.{i}.attn_norm.weight")
        layer["ffn_norm"] = load(f"blk.{i}.ffn_norm.weight")
        for s in TARGETS:
            n_out, n_in = layer[s].shape
            a = (torch.randn(rank, n_in) / n_in**0.5).requires_grad_()
            b = torch.zeros(n_out, rank).requires_grad_()
            layer[s + ".lora"] = (a, b)
            lora += [a, b]
        layers.append(layer)
    load_s = time.perf_counter() - t0

    n_vocab = embd.shape[0]
    tokens = torch.tensor([(i * 7919 + 13) % n_vocab for i in range(seq_len)])
    half = hd // 2
    pos = torch.arange(seq_len, dtype=torch.float64)[:, None]
    inv = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
    cos, sin = (torch.cos(pos * inv).float(), torch.sin(pos * inv).float())

    def lin(layer, s, x):
        a, b = layer[s + ".lora"]
        return x @ layer[s].T + scale * ((x @ a.T) @ b.T)

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def rope(x):  # (heads, T, hd), adjacent pairs
        x = x.view(x.shape[0], x.shape[1], half, 2)
        x0, x1 = x[..., 0], x[..., 1]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), -1).flatten(2)

    def step():
        for p in lora:
            p.grad = None
        t = seq_len
        x = embd[tokens]
        for layer in layers:
            h = rms(x, layer["attn_norm"])
            q = rope(lin(layer, "attn_q", h).view(t, n_head, hd).transpose(0, 1))
            k = rope(lin(layer, "attn_k", h).view(t, n_head_kv, hd).transpose(0, 1))
            v = lin(layer, "attn_v", h).view(t, n_head_kv, hd).transpose(0, 1)
            g = n_head // n_head_kv
            k, v = k.repeat_interleave(g, 0), v.repeat_interleave(g, 0)
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + lin(layer, "attn_output", o.transpose(0, 1).reshape(t, n_embd))
            h = rms(x, layer["ffn_norm"])
            gate = torch.nn.functional.silu(lin(layer, "ffn_gate", h))
            x = x + lin(layer, "ffn_down", gate * lin(layer, "ffn_up", h))
        logits = rms(x[:-1], out_norm) @ out_w.T
        lp = torch.log_softmax(logits, -1).gather(1, tokens[1:, None])
        loss = -lp.mean()
        loss.backward()
        return loss.item()

    loss = step()  # warm-up
    t1 = time.perf_counter()
    for _ in range(steps):
        step()
    s = time.perf_counter() - t1
    tok_s = steps * seq_len / s
    print(
        json.dumps(
            {
                "impl": f"pytorch {torch.__version__}",
                "seq_len": seq_len,
                "steps": steps,
                "rank": rank,
                "targets": 7,
                "threads": threads,
                "params": sum(p.numel() for p in lora),
                "load_s": load_s,
                "loss": loss,
                "tokens_per_s": tok_s,
                "s_per_1k_tokens": 1000.0 / tok_s,
            }
        )
    )


if __name__ == "__main__":
    main()
