"""regcore.spatial.lengths: per-voxel vector lengths equal torch's norm (which is much slower on the CPU)."""

from __future__ import annotations

import pytest
import torch

from regcore.spatial.lengths import max_vector_length, vector_lengths


def test_pythagorean_vectors():
    field = torch.zeros(1, 2, 2, 3)
    field[0, 0, 1, 2], field[0, 1, 1, 2] = 3.0, -4.0
    lengths = vector_lengths(field)
    assert lengths.shape == (1, 2, 3)
    assert lengths[0, 1, 2] == 5.0 and lengths.sum() == 5.0
    assert max_vector_length(field) == 5.0


@pytest.mark.parametrize("shape", [(1, 2, 9, 11), (2, 3, 5, 6, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_torch_norm(shape, dtype):
    field = 7 * torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    expected = torch.linalg.vector_norm(field, dim=1)
    torch.testing.assert_close(vector_lengths(field), expected)
    torch.testing.assert_close(max_vector_length(field), expected.amax())
    torch.testing.assert_close(vector_lengths(field[0], dim=0), expected[0])


def test_empty_field_has_no_length():
    assert max_vector_length(torch.zeros(1, 3, 0, 4, 4)) == 0.0
