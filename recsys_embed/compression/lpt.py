"""Low-precision training, LPT, and its adaptive form ALPT (Li et al., AAAI 2023, "Adaptive
Low-Precision Training for Embeddings in Click-Through Rate Prediction"): the table is stored as
``b``-bit integer codes DURING training, not only after it,

    w_i = Δ_i q_i,      q: [n, D] int8 (b = 8) or int16 (b = 16), in [-Q_N, Q_P] = [-2^(b-1), 2^(b-1) - 1],

with one fixed step ``Δ`` for the whole table (LPT, ``Δ = max_abs / Q_P``) or one learned step per
row, ``Δ_i = exp(s_i)`` (ALPT, option ``learned_step: true``: the paper's step per embedding).

Forward de-quantizes the rows of the batch's ids, ``lookup(ids)`` ``[N] -> [N, D]``. Backward
updates the stored rows itself (they are no torch parameters): the gradients of the batch's rows,
those of one id summed first (``G`` ``[U, D]``, U distinct ids), make one step of the row optimizer,

    sgd:              w'_u = w_u - η G_u
    rowwise_adagrad:  m_u += mean_d G_ud²,   w'_u = w_u - η G_u / (sqrt(m_u) + ε)

and the rows are stored again with STOCHASTIC rounding, ``q'_u = clip(floor(w'_u / Δ_u + ξ), -Q_N, Q_P)``
with ``ξ ~ U[0, 1)``: ``E[floor(x + ξ)] = x``, so an update smaller than ``Δ`` still moves a row in
expectation (nearest rounding would drop it). ``η`` and ``ε`` are the layout's table optimizer's
(the fused kernel's lr) unless the option ``lr`` is given. The update runs in the backward of the
loss, once per step (the layout reads every feature of a group in one :meth:`~LowPrecision.lookup_many`),
in training mode only: evaluation and ``no_grad`` reads change nothing.

ALPT's step gradient is LSQ's straight-through estimate (Esser et al. 2020) at the re-quantized row,
``∂ŵ/∂Δ = q' - w'/Δ`` inside the range and ``-Q_N`` or ``Q_P`` where clipped, so
``∂L/∂s_u = Δ_u Σ_d G_ud ∂ŵ_ud/∂Δ_u`` with the batch's gradient standing for the one at the new row
(the paper evaluates it in a second forward pass; here one pass). The dense optimizer trains ``s``
at lr ``step_lr`` (default 1e-3) without weight decay (which would pull ``s`` to 0, ``Δ`` to 1); its
log form keeps Adam's scale-free steps relative (a raw ``Δ`` of 1e-3 at lr 1e-2 would go negative).
When ``s`` moves, the codes stay (the paper re-rounds them at the new step): rows rescale by ``Δ'/Δ``.

Random numbers: each backward seeds a generator with ``(seed, updates)``, the buffer ``rng`` [2] int64;
``seed`` is drawn from torch's RNG when the method is built, so runs (and resumed runs) repeat.
Rows start ``U(-0.05, 0.05)`` like an exact table, rounded to the NEAREST code (``|w - Δq| <= Δ/2``).

Storage, as ``memory_bytes()`` counts it: codes ``n D b/8`` bytes, the step (4 bytes; ALPT ``4 n``
with two Adam moments, ``12 n``), rowwise Adagrad's momentum ``4 n``, ``rng`` 16. ``num_parameters()``
is in fp32 weights' worth, the unit of a budget: ``ceil(n D b / 32)`` plus the steps; a smaller budget
is a :class:`MethodConfigError` naming that minimum (int8: a bit over 1/4 of the exact table).

Example::

    >>> lpt = LowPrecision.from_options(1000, 16, {"bits": 8}, budget=4001)
    >>> lpt.lookup(torch.tensor([3, 999])).shape, lpt.codes.dtype, lpt.num_parameters(), lpt.memory_bytes()
    (torch.Size([2, 16]), torch.int8, 4001, 20020)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from recsys_embed.compression.method import CompressionMethod, MethodConfigError, check_options, option
from recsys_embed.compression.registry import register_compression
from recsys_embed.tables.base import TableOptimizer

INIT_SCALE = 0.05
# Q_P Δ at the start (int8: Δ = 0.5 / 127); chosen on validation AUC (1M synthetic CTR rows, one epoch)
# among 0.125 .. 8 for MLP and DIN: the smallest worst-case gap to the fp32 tables of the two
# (benchmarks/results/lpt_selection_*.json). A finer step clips trained rows, a coarser one adds rounding noise.
MAX_ABS = 0.5
CODE_TYPES = {8: torch.int8, 16: torch.int16}
OPTIMIZERS = ("rowwise_adagrad", "sgd")
_GOLDEN = 0x9E3779B97F4A7C15  # spreads the per-update seeds


def quantize(x: torch.Tensor, bits: int, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Codes of ``x`` (in units of the step) in ``[-2^(b-1), 2^(b-1) - 1]``, as float: nearest
    rounding, or stochastic ``floor(x + noise)`` with ``noise ~ U[0, 1)`` (unbiased).

    >>> quantize(torch.tensor([0.4, -2.6, 300.0]), 8).tolist()
    [0.0, -3.0, 127.0]
    """
    q_neg, q_pos = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return (x.round() if noise is None else torch.floor(x + noise)).clamp_(-q_neg, q_pos)


class _LowPrecisionRead(torch.autograd.Function):
    """De-quantized rows of ``ids``; backward updates and re-quantizes them (module docstring)."""

    @staticmethod
    def forward(ctx: Any, log_step: torch.Tensor, method: LowPrecision, ids: torch.Tensor) -> torch.Tensor:
        # log_step: ALPT's steps, or an empty tensor that requires grad so that backward runs
        unique, inverse = torch.unique(ids, return_inverse=True)
        ctx.method = method
        ctx.save_for_backward(unique, inverse)
        return method.rows(unique)[inverse]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        unique, inverse = ctx.saved_tensors
        summed = grad.new_zeros(unique.numel(), grad.shape[1]).index_add_(0, inverse, grad)
        return ctx.method.update(unique, summed), None, None


@register_compression("lpt")
class LowPrecision(CompressionMethod):
    """Integer codes and a step trained in place. Options: ``bits`` (8 or 16), ``learned_step``
    (ALPT), ``max_abs`` (``Q_P Δ`` at the start, 0.5), ``optimizer`` (rowwise_adagrad, sgd), ``lr``, ``step_lr`` (ALPT)."""

    description = "LPT / ALPT: int8 or int16 rows during training, stochastic rounding, fixed or learned step (Li et al. 2023)"

    def __init__(self, num_ids: int, dim: int, bits: int = 8, learned_step: bool = False, max_abs: float = MAX_ABS,
                 optimizer: str = "rowwise_adagrad", lr: float | None = None, step_lr: float = 1e-3) -> None:  # fmt: skip
        super().__init__(num_ids, dim)
        if isinstance(bits, bool) or bits not in CODE_TYPES:
            raise MethodConfigError(f"lpt: bits must be one of {sorted(CODE_TYPES)}, got {bits!r}")
        if optimizer not in OPTIMIZERS:
            raise MethodConfigError(f"lpt: optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        if not max_abs > 0 or lr is not None and not lr > 0 or not step_lr > 0:
            raise MethodConfigError(f"lpt: max_abs, lr and step_lr must be > 0, got {max_abs!r}, {lr!r}, {step_lr!r}")
        self.bits, self.learned_step, self.max_abs, self.optimizer, self.lr = bits, learned_step, max_abs, optimizer, lr
        self.step_lr = step_lr
        self.table_optimizer = TableOptimizer()
        step = max_abs / (2 ** (bits - 1) - 1)
        weight = torch.empty(num_ids, dim).uniform_(-INIT_SCALE, INIT_SCALE)
        self.register_buffer("codes", quantize(weight / step, bits).to(CODE_TYPES[bits]))
        if learned_step:
            self.log_step = nn.Parameter(torch.full((num_ids,), step).log())
        else:
            self.register_buffer("step", torch.tensor([step]))
        if optimizer == "rowwise_adagrad":
            self.register_buffer("momentum", torch.zeros(num_ids))
        self.register_buffer("rng", torch.tensor([int(torch.randint(0, 2**62, ())), 0]))

    @classmethod
    def from_options(cls, num_ids: int, dim: int, options: Mapping[str, Any], budget: int | None) -> LowPrecision:
        check_options(options, ["bits", "learned_step", "max_abs", "optimizer", "lr", "step_lr"], "lpt")
        bits = options.get("bits", 8)
        learned = option(options, "learned_step", False, bool, "lpt")
        lr = None if options.get("lr") is None else option(options, "lr", None, float, "lpt")
        method = cls(num_ids, dim, bits, learned, option(options, "max_abs", MAX_ABS, float, "lpt"),
                     option(options, "optimizer", "rowwise_adagrad", str, "lpt"), lr, option(options, "step_lr", 1e-3, float, "lpt"))  # fmt: skip
        if budget is not None and budget < method.num_parameters():
            least = method.num_parameters()
            raise MethodConfigError(
                f"lpt: {bits}-bit codes of {num_ids} ids x dim {dim}{' with a learned step per row' if learned else ''} "
                f"need at least {least} weights ({4 * least} bytes, {least / (num_ids * dim):.3f} of the exact table), "
                f"the budget allows {budget}"
            )
        return method

    def state_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"bits": self.bits, "learned_step": self.learned_step, "max_abs": self.max_abs, "optimizer": self.optimizer}
        if self.lr is not None:
            config["lr"] = self.lr
        if self.learned_step:
            config["step_lr"] = self.step_lr
        return config

    def use_table_optimizer(self, optimizer: TableOptimizer) -> None:
        self.table_optimizer = optimizer

    def dense_parameters(self) -> list[dict[str, Any]]:
        """ALPT: the log steps at ``step_lr``, without weight decay."""
        return [{"params": [self.log_step], "lr": self.step_lr, "weight_decay": 0.0}] if self.learned_step else []

    def steps(self, rows: torch.Tensor) -> torch.Tensor:
        """``Δ`` of each row ``[U, 1]`` (one shared value for LPT)."""
        return self.log_step[rows].exp()[:, None] if self.learned_step else self.step.expand(rows.numel())[:, None]

    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The de-quantized rows ``Δ q`` ``[U, D]``."""
        return self.steps(rows) * self.codes[rows].to(torch.float32)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return self.rows(ids)
        trigger = self.log_step if self.learned_step else torch.zeros(0, requires_grad=True)
        return _LowPrecisionRead.apply(trigger, self, ids)

    def lookup_many(self, ids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """One read (one update in backward) for all the id tensors of a forward."""
        return list(self.lookup(torch.cat(list(ids))).split([i.numel() for i in ids]))

    @torch.no_grad()
    def update(self, rows: torch.Tensor, grad: torch.Tensor) -> torch.Tensor | None:
        """One optimizer step on distinct ``rows`` ``[U]`` with gradients ``grad`` ``[U, D]``, the
        rows re-quantized stochastically; ALPT: the gradient of ``log_step`` ``[n]`` (else ``None``)."""
        step = self.steps(rows)
        direction = grad
        if self.optimizer == "rowwise_adagrad":
            self.momentum[rows] += grad.pow(2).mean(1)
            direction = grad / (self.momentum[rows].sqrt() + self.table_optimizer.eps)[:, None]
        lr = self.lr if self.lr is not None else self.table_optimizer.lr
        x = (self.rows(rows) - lr * direction) / step
        codes = quantize(x, self.bits, torch.rand(x.shape, generator=self._generator(), device=x.device))
        self.codes[rows] = codes.to(self.codes.dtype)
        if not self.learned_step:
            return None
        bound = 2.0 ** (self.bits - 1)
        lsq = torch.where(x < -bound, -bound, torch.where(x > bound - 1, bound - 1, codes - x))  # ∂ŵ/∂Δ
        out = torch.zeros_like(self.log_step)
        out[rows] = (grad * lsq).sum(1) * step[:, 0]
        return out

    def _generator(self) -> torch.Generator:
        """A generator for one update, seeded from ``(seed, updates)``; counts the update."""
        seed, count = (int(v) for v in self.rng)
        self.rng[1] += 1
        return torch.Generator(device=self.codes.device).manual_seed((seed + count * _GOLDEN) % 2**63)

    def num_parameters(self) -> int:
        """Weights in fp32 weights' worth: the codes ``ceil(n D b / 32)`` plus the steps (1, or n for ALPT)."""
        return -(-self.num_ids * self.dim * self.bits // 32) + (self.num_ids if self.learned_step else 1)

    def details(self) -> str:
        lr = self.lr if self.lr is not None else self.table_optimizer.lr
        step = "learned per row" if self.learned_step else f"fixed {float(self.step):.3g}"
        return f"int{self.bits} codes, step {step}, {self.optimizer} lr {lr:g}, stochastic rounding"
