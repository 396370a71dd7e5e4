"""The Fastfood transform: a random D×d projection in O(D log D) time and O(D) memory.

Like layers.py this module imports nothing else of compacter. Intrinsic-SAID (methods/intrinsic.py)
builds on it.

Fastfood (Le et al., 2013; as used by Li et al., 2018 and Aghajanyan et al., 2021) maps a vector
x of size d to size D as ``S H G Π H B x``, with x zero-padded to L = 2^⌈log2 D⌉ and the
result cut to its first D entries:

* B: a random ±1 diagonal; Π: a random permutation; G: a Gaussian diagonal;
* H: the L×L Walsh–Hadamard matrix in Sylvester order (scipy.linalg.hadamard), never stored;
* S: the scalar 1 / (sqrt(L · ΣG²) · sqrt(D / L)) of the reference implementation.

The transform is linear, so its backward pass is the transposed transform ``Bᵀ H Πᵀ G H Sᵀ`` and
needs nothing saved but the random diagonals: :class:`FastfoodFunction` does that, so a step holds
no (L,)-sized intermediates for autograd.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

# H_L = H_m ⊗ H_m ⊗ ... (Sylvester), so H_L x is a few passes of small dense Hadamard matmuls
# over the axes of x viewed as (m, m, ..., m). Blocks of 2^5 balance FLOPs (m per element per
# pass) against memory passes (log_m L) on CPUs and GPUs alike; the butterfly (m = 2) is
# memory-bound with log2 L passes.
HADAMARD_BLOCK_BITS = 5


@functools.lru_cache(maxsize=64)
def hadamard_matrix(size: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The Sylvester-order Hadamard matrix of a power-of-two size (equal to scipy.linalg.hadamard); cached."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"A Hadamard matrix needs a power-of-two size, got {size}.")
    matrix = torch.ones(1, 1, dtype=dtype, device=device)
    while matrix.shape[0] < size:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)], 0)
    return matrix


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh–Hadamard transform of the last axis (a power of two): ``x @ H``.

    O(L log L): ⌈log2 L / 5⌉ passes of a 32×32 (or smaller) Hadamard matmul along one axis each.
    """
    length = x.shape[-1]
    if length < 1 or length & (length - 1):
        raise ValueError(f"fwht needs a power-of-two length, got {length}; zero-pad the input first.")
    bits = length.bit_length() - 1
    leading = x.shape[:-1]
    after = length
    while bits > 0:
        block_bits = min(HADAMARD_BLOCK_BITS, bits)
        block = 1 << block_bits
        after //= block
        # Compiled, the matrix is traced into the graph as a constant; the cache is for eager calls.
        build = hadamard_matrix.__wrapped__ if torch.compiler.is_compiling() else hadamard_matrix
        hadamard = build(block, x.dtype, x.device)
        # Axis of size `block` with `after` elements below it: (…, before, block, after).
        x = torch.matmul(hadamard, x.reshape(-1, block, after)) if after > 1 else x.reshape(-1, block) @ hadamard
        bits -= block_bits
    return x.reshape(*leading, length)


class FastfoodFunction(torch.autograd.Function):
    """``y = S H G Π H B pad(x)``, cut to D, for a batch of c transforms sharing one input x.

    x: (d,); signs (c, m) int8: the ±1 of B on the first m = 2^⌈log2 d⌉ entries, the only ones a
    zero-padded x reaches; block_index (c, L): Π mod m; gains (c, L): G with S folded in.
    Returns (c, D).

    In Sylvester order H_L = H_{L/m} ⊗ H_m, so for a vector v that is zero outside its first block
    of m, H_L v is H_m v_0 repeated L/m times, and the first block of H_L z is H_m (Σ_blocks z).
    The first H therefore costs O(m log m), Π needs only Π mod m (a gather from the m values),
    and the transposed pass folds Πᵀ and the last H into one scatter-add and one size-m transform:
    one full-length Walsh–Hadamard transform per direction instead of two.
    """

    @staticmethod
    def forward(ctx, x, signs, block_index, gains, out_size: int):
        ctx.save_for_backward(signs, block_index, gains)
        ctx.in_size = x.shape[0]
        mixed = fwht(signs.to(x.dtype) * F.pad(x, (0, signs.shape[1] - x.shape[0])))
        return fwht(torch.gather(mixed, 1, block_index.long()) * gains.to(x.dtype))[:, :out_size]

    @staticmethod
    def backward(ctx, grad):
        signs, block_index, gains = ctx.saved_tensors
        length = gains.shape[1]
        mixed = fwht(F.pad(grad, (0, length - grad.shape[1]))) * gains.to(grad.dtype)
        folded = mixed.new_zeros(signs.shape).scatter_add_(1, block_index.long(), mixed)
        grad_x = (fwht(folded) * signs.to(grad.dtype)).sum(0)[: ctx.in_size]
        return grad_x, None, None, None, None


def next_power_of_two(size: int) -> int:
    return 1 << max(0, math.ceil(math.log2(size)))


def draw_fastfood(count: int, in_size: int, out_size: int, seed: int) -> dict[str, torch.Tensor]:
    """The random diagonals and permutations of c transforms, in full: B and Π over all L entries."""
    length = next_power_of_two(max(out_size, in_size))
    generator = torch.Generator().manual_seed(seed)
    signs = (torch.randint(0, 2, (count, length), generator=generator) * 2 - 1).to(torch.int8)
    permutation = torch.stack([torch.randperm(length, generator=generator) for _ in range(count)])
    gaussian = torch.randn(count, length, generator=generator)
    divisor = torch.sqrt(length * gaussian.pow(2).sum(1, keepdim=True)) * math.sqrt(out_size / length)
    return {"signs": signs, "permutation": permutation, "gains": gaussian / divisor}


class Fastfood(nn.Module):
    """c independent Fastfood projections from size ``in_size`` to ``out_size`` each.

    The random diagonals are buffers drawn from ``seed`` and not saved (``persistent=False``): the
    same seed rebuilds the same projections, which is all a saved Intrinsic-SAID file needs. Only
    what the computation touches is kept: B on the first m entries, Π mod m (int16 while m ≤ 2^15)
    and G, about 6 bytes per projected number.
    """

    def __init__(self, count: int, in_size: int, out_size: int, seed: int, device: torch.device | str | None = None):
        super().__init__()
        length, block = next_power_of_two(max(out_size, in_size)), next_power_of_two(in_size)
        self.in_size, self.out_size = in_size, out_size
        index_dtype = torch.int16 if block <= 2**15 else torch.int32
        if torch.device(device or "cpu").type == "meta":  # sizes only (parameter counts): draw nothing
            shapes = {"signs": ((count, block), torch.int8), "block_index": ((count, length), index_dtype),
                      "gains": ((count, length), torch.float32)}
            for name, (shape, dtype) in shapes.items():
                self.register_buffer(name, torch.empty(shape, dtype=dtype, device="meta"), persistent=False)
            return
        drawn = draw_fastfood(count, in_size, out_size, seed)
        self.register_buffer("signs", drawn["signs"][:, :block].to(device), persistent=False)
        block_index = (drawn["permutation"] % block).to(index_dtype)
        self.register_buffer("block_index", block_index.to(device), persistent=False)
        self.register_buffer("gains", drawn["gains"].to(device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(d,) → (c, D)."""
        if x.shape != (self.in_size,):
            raise ValueError(f"Fastfood expects a vector of size {self.in_size}, got shape {tuple(x.shape)}.")
        return FastfoodFunction.apply(x, self.signs, self.block_index, self.gains, self.out_size)
