"""The layer math against the plain definition W = Σ_i kron(A_i, B_i) (SPEC §1)."""

import pytest
import torch
import torch.nn.functional as F

from compacter.layers import (
    ProjectionBank,
    SharedHypercomplexWeights,
    bottleneck,
    bottleneck_transposed,
    lphm_weight,
    phm_weight,
)


def kron_sum(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    return sum(torch.kron(A[i], B[i]) for i in range(A.shape[0]))


def reference_weights(bank: ProjectionBank) -> list[torch.Tensor]:
    weights = []
    for c in range(bank.count):
        if bank.kind == "dense":
            weights.append(bank.weight[c])
        elif bank.kind == "low_rank":
            weights.append(bank.u[c] @ bank.v[c].T)
        else:
            A = bank.A_tensor if bank.A_tensor.dim() == 3 else bank.A_tensor[c]
            B = bank.B[c] if bank.rank is None else torch.stack(
                [bank.s[c, i] @ bank.t[c, i].T for i in range(bank.n)])
            weights.append(kron_sum(A, B))
    return weights


@pytest.mark.parametrize("n,out_features,in_features", [(2, 4, 6), (4, 8, 16), (3, 9, 12), (12, 24, 768)])
def test_phm_weight_equals_kron_sum(n, out_features, in_features):
    torch.manual_seed(n)
    A = torch.randn(5, n, n, n, dtype=torch.float64)
    B = torch.randn(5, n, out_features // n, in_features // n, dtype=torch.float64)
    W = phm_weight(A, B)
    assert W.shape == (5, out_features, in_features)
    for c in range(5):
        torch.testing.assert_close(W[c], kron_sum(A[c], B[c]))
    shared = torch.randn(n, n, n, dtype=torch.float64)
    for c, W_c in enumerate(phm_weight(shared, B)):
        torch.testing.assert_close(W_c, kron_sum(shared, B[c]))


@pytest.mark.parametrize("n,rank", [(2, 1), (4, 1), (4, 3), (8, 2)])
def test_lphm_weight_and_gradients_equal_kron_sum(n, rank):
    torch.manual_seed(0)
    out_features, in_features = 2 * n, 3 * n
    A = torch.randn(n, n, n, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, n, out_features // n, rank, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, n, in_features // n, rank, dtype=torch.float64, requires_grad=True)
    x = torch.randn(7, in_features, dtype=torch.float64)
    fast = torch.stack([x @ W.T for W in lphm_weight(A, s, t)])
    grads_fast = torch.autograd.grad(fast.square().sum(), (A, s, t))
    slow = torch.stack([x @ kron_sum(A, torch.stack([s[c, i] @ t[c, i].T for i in range(n)])).T for c in range(3)])
    grads_slow = torch.autograd.grad(slow.square().sum(), (A, s, t))
    torch.testing.assert_close(fast, slow)
    for g_fast, g_slow in zip(grads_fast, grads_slow):
        torch.testing.assert_close(g_fast, g_slow)


@pytest.mark.parametrize("kind,options", [
    ("dense", {}), ("low_rank", {"rank": 2}), ("phm", {"n": 4}), ("phm", {"n": 4, "rank": 1}),
    ("phm", {"n": 2, "rank": 3}),
])
def test_bank_forward_and_gradients_match_reference(kind, options):
    torch.manual_seed(0)
    bank = ProjectionBank(3, 16, 8, kind, dtype=torch.float64, **options)
    with torch.no_grad():
        bank.bias.normal_()
    x = torch.randn(5, 16, dtype=torch.float64)
    weights, biases = bank.build()
    fast = torch.stack([F.linear(x, weights[c], biases[c]) for c in range(3)])
    grads_fast = torch.autograd.grad(fast.sum(), list(bank.parameters()))
    slow = torch.stack([F.linear(x, W, bank.bias[c]) for c, W in enumerate(reference_weights(bank))])
    grads_slow = torch.autograd.grad(slow.sum(), list(bank.parameters()))
    torch.testing.assert_close(fast, slow)
    for g_fast, g_slow in zip(grads_fast, grads_slow):
        torch.testing.assert_close(g_fast, g_slow)


def test_shared_A_gets_gradient_from_every_bank():
    torch.manual_seed(0)
    shared = SharedHypercomplexWeights(4, dtype=torch.float64)
    down = ProjectionBank(2, 16, 4, "phm", n=4, rank=1, shared=shared, dtype=torch.float64)
    up = ProjectionBank(2, 4, 16, "phm", n=4, rank=1, shared=shared, dtype=torch.float64)
    assert "A" not in dict(down.named_parameters()) and down.A_tensor is shared.A
    x = torch.randn(3, 16, dtype=torch.float64)
    (down_w, down_b), (up_w, up_b) = down.build(), up.build()
    adapter_out = sum(bottleneck(x, down_w[c], down_b[c], up_w[c], up_b[c], "gelu") for c in range(2))
    (grad_A,) = torch.autograd.grad(adapter_out.sum(), shared.A)
    A = shared.A
    def W(bank, c):
        return kron_sum(A, torch.stack([bank.s[c, i] @ bank.t[c, i].T for i in range(4)]))
    reference = sum(x + F.gelu(x @ W(down, c).T) @ W(up, c).T for c in range(2))
    torch.testing.assert_close(adapter_out, reference)
    torch.testing.assert_close(grad_A, torch.autograd.grad(reference.sum(), A)[0])


def test_n_that_does_not_divide_is_refused_with_advice():
    with pytest.raises(ValueError, match=r"n=5 does not divide the projection's input size 768.*Choose an n"):
        ProjectionBank(1, 768, 24, "phm", n=5)
    with pytest.raises(ValueError, match=r"n=16 does not divide the projection's output size 24"):
        ProjectionBank(1, 768, 24, "phm", n=16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape, contiguous, biases", [((2, 5, 16), True, True), ((7, 16), True, True),
                                                       ((2, 5, 16), False, True), ((2, 5, 16), True, False)])
def test_the_transposed_bottleneck_is_the_bottleneck_bit_for_bit_with_its_gradients(dtype, shape, contiguous, biases):
    """The forward path's bottleneck (weights transposed once per bank, rows flattened once) runs aten linear's own
    kernels: outputs and gradients equal the plain definition's exactly, not just closely."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(*shape, generator=generator).to(dtype)
    if not contiguous:
        hidden = hidden.transpose(0, 1).contiguous().transpose(0, 1)
    assert hidden.is_contiguous() == contiguous
    weights = [torch.randn(4, 16, generator=generator), torch.randn(4, generator=generator),
               torch.randn(16, 4, generator=generator), torch.randn(16, generator=generator)]
    if not biases:
        weights[1] = weights[3] = None
    results = []
    for function, transpose in ((bottleneck, False), (bottleneck_transposed, True)):
        leaves = [None if w is None else w.to(dtype).requires_grad_() for w in weights]
        x = hidden.clone().requires_grad_()
        given = [None if w is None else (w.t() if transpose and w.dim() == 2 else w) for w in leaves]
        output = function(x, given[0], given[1], given[2], given[3], "gelu")
        output.backward(torch.ones_like(output))
        results.append([output, x.grad, *(w.grad for w in leaves if w is not None)])
    for plain, transposed in zip(*results):
        assert torch.equal(plain, transposed)
