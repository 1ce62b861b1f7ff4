"""The contract battery: every operator configuration in ``operator_cases`` against the same checks.

Tolerances: the adjoint dot test is exact up to rounding, so its relative error is held to
1e-10 in float64 and 1e-5 in float32 (relative to ||Ax|| ||y||).
"""

from __future__ import annotations

import io

import pytest
import torch
from operator_cases import CASES

from invdiff.operators import DecomposableOperator, LinearOperator, Operator, compose

LINEAR = sorted(n for n, f in CASES.items() if f(0).is_linear)
SVD = sorted(n for n, f in CASES.items() if isinstance(f(0), DecomposableOperator))
ALL = sorted(CASES)


def random_input(shape: tuple[int, ...], is_complex: bool, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    if is_complex:
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return torch.randn(shape, dtype=cdtype, generator=g)
    return torch.randn(shape, dtype=dtype, generator=g)


def build(name: str, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu", seed: int = 0) -> Operator:
    return CASES[name](seed).to(device=device, dtype=dtype)


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b>: Hermitian for complex pairs; the real part where the adjoint is the real-inner-product one."""
    return torch.vdot(a.flatten(), b.flatten())


@pytest.mark.parametrize("name", ALL)
def test_declared_shapes_and_dtypes(name: str) -> None:
    op = build(name)
    g = torch.Generator().manual_seed(1)
    x = random_input((2, *op.x_shape), op.x_is_complex, torch.float64, g)
    y = op(x)
    assert tuple(y.shape) == (2, *op.y_shape)
    assert y.is_complex() == op.y_is_complex
    assert y.dtype in (torch.float64, torch.complex128)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("name", LINEAR)
def test_adjoint_dot(name: str, dtype: torch.dtype, tol: float) -> None:
    op = build(name, dtype)
    g = torch.Generator().manual_seed(2)
    x = random_input((3, *op.x_shape), op.x_is_complex, dtype, g)
    y = random_input((3, *op.y_shape), op.y_is_complex, dtype, g)
    ax, aty = op(x), op.adjoint(y)
    lhs, rhs = inner(ax, y), inner(x, aty)
    if not (op.x_is_complex and op.y_is_complex):  # real inner product adjoint
        lhs, rhs = lhs.real, rhs.real
    assert abs(lhs - rhs) <= tol * ax.norm() * y.norm()


@pytest.mark.parametrize("name", LINEAR)
def test_adjoint_equals_autograd_vjp(name: str) -> None:
    op = build(name)
    g = torch.Generator().manual_seed(3)
    x = random_input((2, *op.x_shape), op.x_is_complex, torch.float64, g).requires_grad_(True)
    v = random_input((2, *op.y_shape), op.y_is_complex, torch.float64, g)
    (grad,) = torch.autograd.grad(op(x), x, grad_outputs=v)
    torch.testing.assert_close(grad, op.adjoint(v), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ALL)
def test_vjp_matches_autograd(name: str) -> None:
    op = build(name)
    g = torch.Generator().manual_seed(3)
    x = random_input((2, *op.x_shape), op.x_is_complex, torch.float64, g)
    v = random_input((2, *op.y_shape), op.y_is_complex, torch.float64, g)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(op(xg), xg, grad_outputs=v)
    torch.testing.assert_close(op.vjp(x, v), grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", LINEAR)
def test_normal_is_adjoint_of_forward(name: str) -> None:
    op = build(name)
    x = random_input((2, *op.x_shape), op.x_is_complex, torch.float64, torch.Generator().manual_seed(4))
    torch.testing.assert_close(op.normal(x), op.adjoint(op(x)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", LINEAR)
def test_pinv_consistency(name: str) -> None:
    """A pinv(A x) = A x: the pseudo-inverse reproduces any measurement in the range of A."""
    op = build(name)
    x = random_input((2, *op.x_shape), op.x_is_complex, torch.float64, torch.Generator().manual_seed(5))
    ax = op(x)
    x_pinv = op.pinv(ax, tol=1e-10, max_iter=500)
    assert x_pinv.shape == x.shape
    err = (op(x_pinv) - ax).flatten(1).norm(dim=1) / ax.flatten(1).norm(dim=1)
    assert err.max() < 1e-6, f"relative range error {err.max():.2e}"


@pytest.mark.parametrize("name", SVD)
def test_svd_reproduces_operator(name: str) -> None:
    op = build(name)
    assert isinstance(op, DecomposableOperator)
    g = torch.Generator().manual_seed(6)
    x = random_input((2, *op.x_shape), op.x_is_complex, torch.float64, g)
    y = random_input((2, *op.y_shape), op.y_is_complex, torch.float64, g)
    s = op.singular_values()
    assert bool((s >= 0).all()), "singular values must be non-negative"
    torch.testing.assert_close(op.u(s * op.v_adjoint(x)), op(x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(op.v(s * op.u_adjoint(y)), op.adjoint(y), rtol=1e-9, atol=1e-9)
    # V is unitary: V V^H x = x, and ||V^H x|| = ||x||.
    torch.testing.assert_close(op.v(op.v_adjoint(x)), x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(op.v_adjoint(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-9, atol=0)
    # U^H U z = z on the coordinates the measurement reaches (s > 0).
    z = op.u_adjoint(op(x))
    torch.testing.assert_close(op.u_adjoint(op.u(z)), z, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", LINEAR)
def test_opnorm_against_dense_matrix(name: str) -> None:
    op = build(name)
    n = 1
    for d in op.x_shape:
        n *= d
    if n > 1600:
        pytest.skip("dense reference only for small operators")
    dtype = torch.complex128 if op.x_is_complex else torch.float64
    basis = torch.eye(n, dtype=dtype).reshape(n, *op.x_shape)
    dense = op(basis).reshape(n, -1).T
    if op.y_is_complex and not op.x_is_complex:
        dense = torch.cat([dense.real, dense.imag])
    exact = torch.linalg.matrix_norm(dense, ord=2)
    est = op.opnorm(iterations=300, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(est.to(exact.dtype), exact, rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize("name", ALL)
def test_batch_consistency(name: str) -> None:
    op = build(name)
    x = random_input((3, *op.x_shape), op.x_is_complex, torch.float64, torch.Generator().manual_seed(7))
    full = op(x)
    for i in range(3):
        torch.testing.assert_close(op(x[i : i + 1]), full[i : i + 1], rtol=1e-12, atol=1e-12)
    if isinstance(op, LinearOperator):
        y = op(x)
        adj = op.adjoint(y)
        for i in range(3):
            torch.testing.assert_close(op.adjoint(y[i : i + 1]), adj[i : i + 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_dtype_and_device_moves(name: str, device: torch.device) -> None:
    op64 = build(name, torch.float64, device)
    op32 = build(name, torch.float32, device)
    g = torch.Generator().manual_seed(8)
    x64 = random_input((2, *op64.x_shape), op64.x_is_complex, torch.float64, g).to(device)
    y64 = op64(x64)
    assert y64.device.type == device.type
    assert y64.dtype == (torch.complex128 if op64.y_is_complex else torch.float64)
    x32 = x64.to(torch.complex64 if x64.is_complex() else torch.float32)
    y32 = op32(x32)
    assert y32.dtype == (torch.complex64 if op32.y_is_complex else torch.float32)
    torch.testing.assert_close(y32.to(y64.dtype), y64, rtol=1e-4, atol=1e-4 * float(y64.abs().max()))


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name: str) -> None:
    source, target = build(name, seed=0), build(name, seed=1)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer))
    x = random_input((2, *source.x_shape), source.x_is_complex, torch.float64, torch.Generator().manual_seed(9))
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", LINEAR)
def test_composition_adjoint(name: str) -> None:
    """compose(op, op^H op) is linear and its adjoint is exact."""
    op = build(name)
    composed = compose(op, _NormalOperator(op))
    assert isinstance(composed, LinearOperator)
    g = torch.Generator().manual_seed(10)
    x = random_input((2, *op.x_shape), op.x_is_complex, torch.float64, g)
    y = random_input((2, *op.y_shape), op.y_is_complex, torch.float64, g)
    lhs, rhs = inner(composed(x), y), inner(x, composed.adjoint(y))
    if not (op.x_is_complex and op.y_is_complex):
        lhs, rhs = lhs.real, rhs.real
    assert abs(lhs - rhs) <= 1e-10 * composed(x).norm() * y.norm()


@pytest.mark.parametrize("name", ALL)
def test_methods_do_not_mutate_operator(name: str) -> None:
    op = build(name)
    before = {k: v.clone() for k, v in op.state_dict().items()}
    x = random_input((2, *op.x_shape), op.x_is_complex, torch.float64, torch.Generator().manual_seed(11))
    y = op(x)
    if isinstance(op, LinearOperator):
        op.adjoint(y)
        op.pinv(y, max_iter=5)
        op.opnorm(iterations=3)
    after = op.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_battery_covers_every_family() -> None:
    families = {name.split("/")[0] for name in CASES}
    assert families >= {"masking", "blur", "downsampling", "mri", "hyperspectral", "composed"}


class _NormalOperator(LinearOperator):
    """A^H A as an operator on x (self-adjoint), used to test composition."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__()
        self.op = op
        self.x_shape = self.y_shape = tuple(op.x_shape)
        self.x_is_complex = self.y_is_complex = op.x_is_complex

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.normal(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.normal(y)
