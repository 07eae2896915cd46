"""Each surrogate's derivative equals autograd of its smooth primitive."""

import pytest
import torch

from spikeforge.neuron import SURROGATES, get_surrogate, surrogate_names


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_derivative_matches_autograd_of_primitive(name):
    surrogate = get_surrogate(name)
    x = torch.linspace(-3, 3, 601, dtype=torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(surrogate.primitive(x).sum(), x)
    torch.testing.assert_close(grad, surrogate.derivative(x.detach()), rtol=1e-10, atol=1e-12)
    # the derivative peaks at the threshold and decays away from it
    d = surrogate.derivative(x.detach())
    assert d.argmax().item() == 300
    assert d[0] < 0.5 * d[300] and d[-1] < 0.5 * d[300]


def test_named_formulas():
    x = torch.tensor([0.0, 0.5, -2.0], dtype=torch.float64)
    torch.testing.assert_close(get_surrogate("exp").derivative(x), torch.exp(-x.abs()))
    torch.testing.assert_close(
        get_surrogate("inverse-square").derivative(x), 1 / (100 * x.abs() + 1) ** 2
    )
    torch.testing.assert_close(
        get_surrogate("fast-sigmoid").derivative(x, scale=2.0), 1 / (2 * x.abs() + 1) ** 2
    )


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="exp, fast-sigmoid, inverse-square"):
        get_surrogate("tanh")
    assert surrogate_names() == ["exp", "fast-sigmoid", "inverse-square"]
