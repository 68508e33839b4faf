"""The local model x_i: optimizer steps, the global schedule, and how a round's outcome applies.

Algorithm 1 of DESIGN.md for one member, with x' kept on the CPU in fp32:
    x_i <- x_i + C[Delta] - C[delta_i]   (the second term only where this member's part was included)
    x'  <- x' + C[Delta]
so that after a round x_i - x' is exactly what this member has not yet had averaged in.

Precision (``--precision``, this node's own choice): the parameters, AdamW's state, x_i and x' are
fp32 whatever it is; bf16 or fp16 only changes the arithmetic of the forward and backward passes
(``torch.autocast``), and fp16's narrow range takes a loss scaler (``torch.amp.GradScaler``), which
skips a step whose gradients overflowed.

Shapes: flat vectors are ``[n]`` fp32 on the CPU, ``n`` = number of (unique) parameters.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from node.errors import NodeError
from swarm.averaging.shards import Span
from swarm.averaging.state import GlobalCopy, ShardUpdate

logger = logging.getLogger(__name__)


def lr_at(
    step: float, *, peak: float, warmup_steps: int, total_steps: int, floor_ratio: float = 0.1
) -> float:
    """Linear warm-up to ``peak``, cosine decay to ``floor_ratio * peak`` at ``total_steps``, then flat."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (floor_ratio + (1 - floor_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def pick_device(choice: str) -> torch.device:
    """The device of ``--device`` (auto: CUDA when torch sees one); NodeError for cuda without CUDA."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise NodeError("--device cuda: torch sees no CUDA device here (use --device cpu or auto)")
        return torch.device("cuda")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    """What the coordinator shows for a node: "cpu" or "cuda:0 NVIDIA H100 80GB HBM3"."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return device.type


PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""``--precision``: the dtype the forward and backward passes autocast to (None: plain fp32)."""


def check_precision(precision: str, device: torch.device) -> None:
    """NodeError where ``device`` cannot compute in ``precision``."""
    if precision not in PRECISIONS:
        raise NodeError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise NodeError("--precision bf16: this GPU does not compute in bf16 (use fp16 or fp32)")


def causal_lm_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of ``batch`` ``[b, seq_len + 1]``."""
    logits = model(input_ids=batch[:, :-1]).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


class LocalTrainer:
    """Owns x_i (the model's parameters), its AdamW state, and the node's step counters."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: torch.device,
        peak_lr: float,
        warmup_steps: int,
        total_steps: int,
        weight_decay: float,
        batch_size: int,
        micro_batch: int | None,
        joiner_warmup_steps: int,
        max_grad_norm: float = 0.0,
        precision: str = "fp32",
    ):
        check_precision(precision, device)
        self.device = device
        self.model = model.to(device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        for p in self.params:  # rounds add into flat views of the parameters
            if not p.is_contiguous():
                p.data = p.data.contiguous()
        self.num_elements = sum(p.numel() for p in self.params)
        self.optimizer = torch.optim.AdamW(self.params, lr=peak_lr, weight_decay=weight_decay)
        self.peak_lr, self.warmup_steps, self.total_steps = peak_lr, warmup_steps, total_steps
        self.batch_size = batch_size
        self.joiner_warmup_steps = joiner_warmup_steps
        self.max_grad_norm = max_grad_norm
        self.precision = precision
        self.compute_dtype = PRECISIONS[precision]
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.micro_batch = micro_batch or batch_size
        self.steps = 0
        self.samples = 0

    # --- flat views ---------------------------------------------------------------------------

    @torch.no_grad()
    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1).float().cpu() for p in self.params])

    @torch.no_grad()
    def load_flat(self, values: torch.Tensor) -> None:
        if values.numel() != self.num_elements:
            raise ValueError(f"vector of {values.numel()} elements for a model of {self.num_elements}")
        offset = 0
        for p in self.params:
            p.copy_(values[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    def _pieces(self, first: int, stride: int, count: int) -> Iterator[tuple[torch.Tensor, int, int]]:
        """The entries ``first + stride * j`` (j < count) parameter by parameter: (a strided view of
        the parameter, j0, j1) for each parameter that holds entries j0..j1-1."""
        if not count:
            return
        stop = first + stride * (count - 1) + 1
        if first < 0 or stop > self.num_elements:
            raise ValueError(f"entries {first}..{stop - 1} do not fit a model of {self.num_elements}")
        offset = 0
        for p in self.params:
            begin, end = offset, offset + p.numel()
            offset = end
            if end <= first or begin >= stop:
                continue
            j0 = max(0, -(-(begin - first) // stride))  # first j with first + stride j >= begin
            j1 = min(count, -(-(end - first) // stride))  # first j at or past end
            if j0 < j1:
                local = first + stride * j0 - begin
                yield p.view(-1)[local : local + stride * (j1 - j0 - 1) + 1 : stride], j0, j1

    @torch.no_grad()
    def _add_strided(self, first: int, stride: int, values: torch.Tensor) -> None:
        """x_i[first + stride * j] += values[j], straight into the parameters it falls in (no flat
        copy of the model is made)."""
        values = values.to(self.device, non_blocking=True)
        for view, j0, j1 in self._pieces(first, stride, values.numel()):
            view.add_(values[j0:j1])

    @torch.no_grad()
    def gather(self, spans: Sequence[Span]) -> torch.Tensor:
        """x_i on ``spans``, one after another: fp32 on the model's device, read straight from the
        parameters (what a packed round contribution needs, without a flat copy of the model)."""
        pieces = [
            view.float() for span in spans for view, _, _ in self._pieces(span.first, span.stride, span.count)
        ]
        if not pieces:
            return torch.zeros(0, dtype=torch.float32, device=self.device)
        return torch.cat(pieces)

    @torch.no_grad()
    def all_finite(self) -> bool:
        """Whether every parameter of x_i is finite (one sum per parameter in the common case)."""
        total = torch.stack([p.detach().float().sum() for p in self.params]).sum()
        if bool(torch.isfinite(total)):
            return True
        return all(bool(torch.isfinite(p).all()) for p in self.params)

    # --- training -----------------------------------------------------------------------------

    def auto_micro_batch(self, sample: torch.Tensor) -> int:
        """Largest micro-batch (a power of two up to the batch) whose step fits in GPU memory."""
        if self.device.type != "cuda":
            return self.micro_batch
        size = self.batch_size
        while size >= 1:
            try:
                loss = self._forward(sample[:size].to(self.device))
                loss.backward()
                self.optimizer.zero_grad(set_to_none=True)
                self.micro_batch = size
                logger.info("micro-batch %d of %d fits in GPU memory", size, self.batch_size)
                return size
            except torch.cuda.OutOfMemoryError:
                self.optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                size //= 2
        raise RuntimeError("not even a micro-batch of one sequence fits in GPU memory")

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.compute_dtype is None:
            return causal_lm_loss(self.model, batch)
        with torch.autocast(device_type=self.device.type, dtype=self.compute_dtype):
            return causal_lm_loss(self.model, batch)

    def lr_for(self, global_step: float) -> float:
        lr = lr_at(
            global_step, peak=self.peak_lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps
        )
        # A fresh optimizer state (a joiner, or a restart) ramps up instead of taking full steps at once.
        ramp = min(1.0, (self.steps + 1) / self.joiner_warmup_steps) if self.joiner_warmup_steps else 1.0
        return lr * ramp

    def step(self, batch: torch.Tensor, *, global_step: float) -> float:
        """One optimizer step on ``batch`` ``[batch_size, seq_len + 1]``; returns the mean loss."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_for(global_step)
        total = 0.0
        chunks = batch.split(self.micro_batch)
        scaler = self.scaler
        for chunk in chunks:
            loss = self._forward(chunk.to(self.device, non_blocking=True))
            part = loss * (chunk.shape[0] / batch.shape[0])
            (scaler.scale(part) if scaler is not None else part).backward()
            total += loss.item() * chunk.shape[0]
        if scaler is not None:
            scaler.unscale_(self.optimizer)  # clip, and step, on the true gradients
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        if scaler is not None:
            scaler.step(self.optimizer)  # skipped where a gradient overflowed fp16
            scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        self.samples += batch.shape[0]
        return total / batch.shape[0]

    # --- rounds -------------------------------------------------------------------------------

    @torch.no_grad()
    def apply_round(self, updates: Sequence[ShardUpdate], global_copy: GlobalCopy) -> None:
        """Apply committed shards to x' and x_i (Algorithm 1); shards not listed change nothing."""
        if not updates:
            return
        for update in updates:
            global_copy.apply_shard(update.first, update.aggregate, update.stride)
            change = update.aggregate if update.own is None else update.aggregate - update.own
            self._add_strided(update.first, update.stride, change)

    @torch.no_grad()
    def apply_folds(self, folds: Sequence[tuple[int, torch.Tensor]]) -> None:
        """Add owner error moved into this member's residual (``RoundOutcome.folds``) to x_i."""
        for start, moved in folds:
            self._add_strided(start, 1, moved)

    @torch.no_grad()
    def reset_to(self, values: torch.Tensor) -> None:
        """Start over from ``values`` (x') with a fresh optimizer state, after local divergence."""
        self.load_flat(values)
        self.optimizer.state.clear()

    @torch.no_grad()
    def adopt_global_change(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """After replacing x' from a peer: move x_i by the same amount, keeping x_i - x' (our unsent work)."""
        self._add_strided(0, 1, new - old)

    @torch.no_grad()
    def evaluate(self, values: torch.Tensor | None, batches: Sequence[torch.Tensor]) -> float:
        """Mean held-out loss (nats per byte) of the model with parameters ``values`` (x'), or of the
        working model x_i as it is when ``values`` is None."""
        own = self.flat() if values is not None else None
        if values is not None:
            self.load_flat(values)
        self.model.eval()
        try:
            losses = [self._forward(b.to(self.device)).item() for b in batches]
        finally:
            if own is not None:
                self.load_flat(own)
        return sum(losses) / len(losses)
