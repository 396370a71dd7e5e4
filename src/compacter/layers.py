"""The layer math: dense, low-rank and (L)PHM projections, and the bottleneck adapter.

This module imports nothing else of compacter; everything above it builds on it.

Notation (SPEC §1): a projection maps ``in_features`` to ``out_features``; ``n`` is the
hypercomplex dimension and must divide both. A PHM weight is ``W = Σ_h A_h ⊗ B_h`` with
``A_h`` (n×n) and ``B_h`` ((out/n)×(in/n)); an LPHM weight factors ``B_h = s_h t_hᵀ`` with rank r.

Why the weights are built the way they are
------------------------------------------
The authors' code (and AdapterHub's port) rebuilds each layer's ``W`` with a loop of small
``kron`` kernels at every step, which costs more time than the adapter's matmuls. Here all the
projections of one kind in a model live in one :class:`ProjectionBank`, whose parameters carry a
leading "which projection" axis. Once per forward pass of the model the bank builds every
projection's weight together:

* ``B = s @ tᵀ`` is one batched matmul over all projections and all ``h``;
* ``W[c, p, o, j, i] = Σ_h A[c, h, p, j] · B[c, h, o, i]`` is one einsum, which torch lowers to a
  single (batched) matmul plus one reshaping copy.

That is a handful of kernels per step for the whole model instead of several per layer, and the
adapters themselves then run one ``F.linear`` per projection (:func:`bottleneck`), exactly like a
plain adapter. When the weights are built, and for how long they are reused, is decided above
this module (``cache.py``); here they are only computed. Applying the
factors to ``x`` directly would need fewer FLOPs, but three small-matmul kernels per layer and
larger saved activations; building ``W`` costs O(out·in·n) per projection once per step,
negligible next to the O(tokens·out·in) of using it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

ProjectionKind = Literal["dense", "low_rank", "phm"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "identity": lambda x: x,
}

SHARED_A_INIT_STD = 1e-4  # authors' `phm_init_range` for the A shared by all layers
OWN_A_INIT_STD = 0.01  # a per-layer A


def phm_weight(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``Σ_h A_h ⊗ B_h`` for a batch of projections.

    A: (c, n, n, n) or (n, n, n) shared by all c; B: (c, n, out/n, in/n). Returns (c, out, in).
    """
    c, n, out_block, in_block = B.shape
    if A.dim() == 3:
        W = torch.einsum("hpj,choi->cpoji", A, B)
    else:
        W = torch.einsum("chpj,choi->cpoji", A, B)
    return W.reshape(c, n * out_block, n * in_block)


def lphm_weight(A: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``Σ_h A_h ⊗ (s_h t_hᵀ)``; s: (c, n, out/n, r), t: (c, n, in/n, r). Returns (c, out, in)."""
    return phm_weight(A, s @ t.transpose(-1, -2))


def low_rank_weight(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``u vᵀ``; u: (c, out, r), v: (c, in, r). Returns (c, out, in)."""
    return u @ v.transpose(-1, -2)


def _glorot_uniform_(tensor: torch.Tensor) -> None:
    """Glorot-uniform on every trailing 2-D matrix of ``tensor`` (authors' init for s, t and B)."""
    fan_out, fan_in = tensor.shape[-2], tensor.shape[-1]
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(tensor, -bound, bound)


class SharedHypercomplexWeights(nn.Module):
    """The "slow" A tensor (n×n×n) that Compacter shares across every layer of a model."""

    def __init__(self, n: int, init_std: float = SHARED_A_INIT_STD, **factory_kwargs) -> None:
        super().__init__()
        self.n = n
        self.A = nn.Parameter(torch.empty(n, n, n, **factory_kwargs))
        nn.init.normal_(self.A, std=init_std)


def check_divisible(n: int, in_features: int, out_features: int) -> None:
    for name, size in (("input size", in_features), ("output size", out_features)):
        if size % n:
            common = math.gcd(in_features, out_features)
            divisors = [m for m in range(2, common + 1) if common % m == 0][:8]
            choice = f"e.g. one of {divisors}" if divisors else "none > 1 exists for these sizes"
            raise ValueError(
                f"The hypercomplex dimension n={n} does not divide the projection's {name} {size} "
                f"(a {in_features}→{out_features} projection). Choose an n that divides both ({choice}), "
                "or change the bottleneck size (reduction_factor / bottleneck_size)."
            )


class ProjectionBank(nn.Module):
    """``count`` linear maps ``in_features → out_features`` whose weights are built together.

    kind ``"dense"``: a full weight per projection; ``"low_rank"``: ``u vᵀ`` of rank ``rank``;
    ``"phm"``: ``Σ A_h ⊗ B_h`` with full ``B_h`` (``rank=None``) or ``B_h = s_h t_hᵀ`` (LPHM).
    A PHM bank either owns one A per projection or uses ``shared`` (one A for the whole model).
    """

    def __init__(
        self,
        count: int,
        in_features: int,
        out_features: int,
        kind: ProjectionKind = "dense",
        *,
        n: int | None = None,
        rank: int | None = None,
        shared: SharedHypercomplexWeights | None = None,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.count, self.in_features, self.out_features = count, in_features, out_features
        self.kind, self.n, self.rank = kind, n, rank
        # Kept out of the module tree so that the shared A is owned (and saved) once, by its owner.
        self._shared = (shared,) if shared is not None else ()
        if kind == "dense":
            self.weight = nn.Parameter(torch.empty(count, out_features, in_features, **factory))
            _glorot_uniform_(self.weight)
        elif kind == "low_rank":
            if not rank or rank < 1:
                raise ValueError(f"A low-rank projection needs rank >= 1, got rank={rank}.")
            self.u = nn.Parameter(torch.empty(count, out_features, rank, **factory))
            self.v = nn.Parameter(torch.empty(count, in_features, rank, **factory))
            _glorot_uniform_(self.u)
            _glorot_uniform_(self.v)
        elif kind == "phm":
            if not n or n < 1:
                raise ValueError(f"A PHM projection needs the hypercomplex dimension n >= 1, got n={n}.")
            check_divisible(n, in_features, out_features)
            if shared is not None and shared.n != n:
                raise ValueError(f"The shared A has n={shared.n} but this projection uses n={n}.")
            out_block, in_block = out_features // n, in_features // n
            if shared is None:
                self.A = nn.Parameter(torch.empty(count, n, n, n, **factory))
                nn.init.normal_(self.A, std=OWN_A_INIT_STD)
            if rank is None:
                self.B = nn.Parameter(torch.empty(count, n, out_block, in_block, **factory))
                _glorot_uniform_(self.B)
            else:
                if rank < 1:
                    raise ValueError(f"An LPHM projection needs rank >= 1, got rank={rank}.")
                self.s = nn.Parameter(torch.empty(count, n, out_block, rank, **factory))
                self.t = nn.Parameter(torch.empty(count, n, in_block, rank, **factory))
                _glorot_uniform_(self.s)
                _glorot_uniform_(self.t)
        else:
            raise ValueError(f"Unknown projection kind {kind!r}; use 'dense', 'low_rank' or 'phm'.")
        self.bias = nn.Parameter(torch.zeros(count, out_features, **factory)) if bias else None

    @property
    def A_tensor(self) -> torch.Tensor:
        if not self._shared:
            return self.A
        A = self._shared[0].A
        device = next(self.parameters()).device
        # on a model spread over devices, the one shared A meets banks on every device
        return A if A.device == device else A.to(device)

    def inputs(self) -> list[torch.Tensor]:
        """Every tensor the weights are built from (the shared A included)."""
        params = list(self.parameters())
        if self._shared:
            params.append(self._shared[0].A)
        return params

    def build_weights(self) -> torch.Tensor:
        """Every projection's weight, (count, out_features, in_features), in one go."""
        if self.kind == "dense":
            return self.weight
        if self.kind == "low_rank":
            return low_rank_weight(self.u, self.v)
        if self.rank is None:
            return phm_weight(self.A_tensor, self.B)
        return lphm_weight(self.A_tensor, self.s, self.t)

    def build(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor | None, ...]]:
        """(weights, biases), one of each per projection; unbind gives views whose backward is one stack."""
        weights = self.build_weights().unbind(0)
        biases = self.bias.unbind(0) if self.bias is not None else (None,) * self.count
        return weights, biases

    def extra_repr(self) -> str:
        extra = f", n={self.n}, rank={self.rank}, shared_A={bool(self._shared)}" if self.kind == "phm" else ""
        if self.kind == "low_rank":
            extra = f", rank={self.rank}"
        return f"count={self.count}, {self.in_features}→{self.out_features}, kind={self.kind}{extra}"


def bottleneck(hidden: torch.Tensor, down_weight: torch.Tensor, down_bias: torch.Tensor | None,
               up_weight: torch.Tensor, up_bias: torch.Tensor | None, activation: str,
               source: torch.Tensor | None = None) -> torch.Tensor:
    """``adapter(h) = h + U(act(D(h)))`` (SPEC §1), with D and U given as built weights and biases; D reads
    ``source`` instead of ``h`` when given."""
    read = hidden if source is None else source
    return hidden + F.linear(ACTIVATIONS[activation](F.linear(read, down_weight, down_bias)), up_weight, up_bias)


def bottleneck_transposed(hidden: torch.Tensor, down_transposed: torch.Tensor, down_bias: torch.Tensor | None,
                          up_transposed: torch.Tensor, up_bias: torch.Tensor | None, activation: str,
                          source: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`bottleneck` with D and U given transposed (``(in, out)`` views of the built weights), bit for bit.

    For a contiguous input and biases, aten's ``linear`` flattens the rows, runs one ``addmm`` with the transposed
    weight and views the result back; here the rows are flattened once for both projections and the transposes are
    made once per bank (``Bottleneck.prepare``), not twice per site at every call (and again in the backward pass).
    """
    read = hidden if source is None else source
    if down_bias is None or up_bias is None or hidden.dim() < 2 or not (hidden.is_contiguous() and read.is_contiguous()):
        return bottleneck(hidden, down_transposed.t(), down_bias, up_transposed.t(), up_bias, activation, source)
    leading = hidden.shape[:-1]
    rows = read.view(math.prod(leading), read.shape[-1])
    inner = ACTIVATIONS[activation](torch.addmm(down_bias, rows, down_transposed))
    return hidden + torch.addmm(up_bias, inner, up_transposed).view(*leading, up_transposed.shape[1])
