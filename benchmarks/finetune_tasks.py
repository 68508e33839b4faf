"""The founder's side of ``finetune.py``: the two tasks' texts, a tokenizer and a Llama-style model made
here, its pretraining on task A, and its loss on task B's held-out split before fine-tuning.

Task A is Python source code (this Python's stdlib); task B is English prose (this machine's license and
package documentation texts), which the model never sees before the swarm fine-tunes it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import sysconfig
import time
from pathlib import Path

EOS = "<|end|>"


def code_texts(limit_bytes: int) -> list[str]:
    """Task A: this Python's stdlib sources (no tests, no site-packages), in path order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test", "pydoc_data"}
    texts, total = [], 0
    for path in sorted(stdlib.rglob("*.py")):
        if skip & set(path.relative_to(stdlib).parts) or total >= limit_bytes:
            continue
        text = path.read_text(errors="replace")
        texts.append(text)
        total += len(text)
    return texts


def prose_texts(limit_bytes: int) -> list[str]:
    """Task B: English paragraphs of this machine's license and package documentation texts, each once."""
    sources = [*Path("/usr/share/common-licenses").glob("*"), *Path("/usr/share/doc").rglob("copyright")]
    sources += [p for p in Path("/usr/share/doc").rglob("README*") if p.suffix in ("", ".gz", ".md", ".txt")]
    seen: set[bytes] = set()
    paragraphs, total = [], 0
    for path in sorted(p for p in sources if p.is_file()):
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except OSError:
            continue
        for block in raw.decode("utf-8", errors="replace").split("\n\n"):
            text = " ".join(block.split())
            key = hashlib.sha256(text.lower().encode()).digest()
            if len(text) < 80 or key in seen or total >= limit_bytes:
                continue
            seen.add(key)
            paragraphs.append(block.strip())
            total += len(text)
    return paragraphs


def model_folder(folder: Path, code: list[str], args: argparse.Namespace):
    """A BPE tokenizer trained on ``code`` and a fresh Llama built for it; the tokenizer is saved."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(code, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS)
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.ffn,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=max(args.seq_len, args.pretrain_seq_len), eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    return tokenizer, LlamaForCausalLM(config)


def pretrain(model, tokenizer, code: list[str], args: argparse.Namespace) -> dict:
    """Task A with plain torch: random windows of the code's tokens, AdamW, warm-up then cosine.
    Every 20th file is held out; its loss is measured before and after."""
    import torch
    import torch.nn.functional as F

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    def stream(texts: list[str]) -> torch.Tensor:
        ids = [i for row in tokenizer(texts)["input_ids"] for i in (*row, tokenizer.eos_token_id)]
        return torch.tensor(ids, dtype=torch.long)

    train = stream([t for i, t in enumerate(code) if i % 20])
    held = stream([t for i, t in enumerate(code) if i % 20 == 0])
    width, rng = args.pretrain_seq_len + 1, torch.Generator().manual_seed(args.seed)

    def batch(tokens: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        return torch.stack([tokens[s : s + width] for s in starts.tolist()]).to(device)

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=x[:, :-1]).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))

    stride = max(1, (len(held) - width) // (args.pretrain_batch * 8))
    held_batches = [batch(held, torch.arange(8 * args.pretrain_batch)[i::8] * stride) for i in range(8)]

    @torch.no_grad()
    def held_out_loss() -> float:
        model.eval()
        return sum(loss_of(x).item() for x in held_batches) / len(held_batches)

    model.to(device)
    before, started = held_out_loss(), time.monotonic()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.pretrain_lr, weight_decay=0.01)
    warmup = max(1, args.pretrain_steps // 10)

    def rate(step: int) -> float:  # of the peak: linear warm-up, then cosine down to a tenth
        done = (step - warmup) / max(1, args.pretrain_steps - warmup)
        return (step + 1) / warmup if step < warmup else 0.1 + 0.45 * (1 + math.cos(math.pi * done))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    model.train()
    losses = []
    for step in range(args.pretrain_steps):
        starts = torch.randint(0, len(train) - width, (args.pretrain_batch,), generator=rng)
        loss = loss_of(batch(train, starts))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0 or step == args.pretrain_steps - 1:
            print(f"pretrain step {step}: loss {losses[-1]:.3f}", flush=True)
    return {
        "steps": args.pretrain_steps,
        "tokens": args.pretrain_steps * args.pretrain_batch * args.pretrain_seq_len,
        "train_tokens_available": len(train),
        "held_out_loss_at_init": before,
        "held_out_loss_after": held_out_loss(),
        "last_train_loss": sum(losses[-10:]) / len(losses[-10:]),
        "seconds": time.monotonic() - started,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def task_b_eval_loss(model_dir: Path, store: Path, args: argparse.Namespace) -> float:
    """The pretrained model's loss on the held-out batches of the run's data artifact in ``store``:
    what a node's evaluation of x' reads before its first round (same batches, same loss)."""
    import torch

    from node.data import open_shards
    from node.trainer import causal_lm_loss
    from swarm.data.batches import held_out_batches
    from swarm.models.build import build_model, resolve_model

    (folder,) = [
        p.parent
        for p in store.glob("*/manifest.json")
        if json.loads(p.read_text())["kind"] == "data" and not p.parent.name.startswith(".")
    ]
    shards = open_shards(folder).shards
    batches = held_out_batches(shards, batch_size=args.batch_size, num_batches=args.eval_batches)
    network = build_model(resolve_model(str(model_dir)), seed=args.seed).to(args.device).eval()
    with torch.no_grad():
        return sum(causal_lm_loss(network, b.to(args.device)).item() for b in batches) / len(batches)
