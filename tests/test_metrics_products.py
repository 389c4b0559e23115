"""The blocked inner products of the exact searches (`dcr_hf.metrics.products.InnerProducts`)."""

import pytest
import torch

from dcr_hf.metrics.products import InnerProducts


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_products_equal_the_matrix_product(with_bias, rows):
    generator = torch.Generator().manual_seed(0)
    references = torch.randn(300, 48, generator=generator)
    queries = torch.randn(rows, 48, generator=generator)
    bias = torch.randn(300, generator=generator) if with_bias else None
    products = InnerProducts(references, bias)
    assert products.by_convolution == torch.backends.mkldnn.is_available()
    found = products(queries)
    expected = queries.double() @ references.double().T + (0 if bias is None else bias.double())
    assert found.shape == (rows, 300) and found.dtype == torch.float32
    torch.testing.assert_close(found.double(), expected, rtol=0, atol=1e-4)


def test_a_block_that_is_a_view_gives_its_own_rows():
    references = torch.randn(50, 16)
    queries = torch.randn(40, 16)
    products = InnerProducts(references)
    torch.testing.assert_close(products(queries[10:20]), queries[10:20] @ references.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(products(queries.T.contiguous().T[5:9]), queries[5:9] @ references.T, rtol=1e-5, atol=1e-5)


def test_reduced_precision_convolutions_are_not_used(monkeypatch):
    """A user's `torch.backends.mkldnn` bf16/tf32 mode would make the "exact" search approximate:
    the products then go through `torch.mm`."""
    monkeypatch.setattr(torch.backends.mkldnn, "fp32_precision", "bf16", raising=False)
    references = torch.randn(30, 8)
    products = InnerProducts(references)
    assert not products.by_convolution
    buffer = torch.empty(5, 30)
    queries = torch.randn(4, 8)
    torch.testing.assert_close(products(queries, buffer), queries @ references.T)


def test_other_dtypes_use_the_matrix_product():
    references = torch.randn(30, 8, dtype=torch.float64)
    assert not InnerProducts(references).by_convolution
