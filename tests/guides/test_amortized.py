import pyro
import pytest
import torch
import torch.nn.functional as F

from pgm_lab.errors import ConfigError, DataError
from pgm_lab.guides import AmortizedNormal


@pytest.mark.parametrize("transform", ["softplus", "exp"])
def test_encode_and_sample_site(transform):
    guide = AmortizedNormal(10, 3, (7,), scale_transform=transform, min_scale=1e-3)
    x = torch.rand(4, 10)
    loc, scale = guide.encode(x)
    h = guide.encoder(x)
    raw = h[:, 3:]
    expected = (F.softplus(raw) if transform == "softplus" else raw.exp()) + 1e-3
    torch.testing.assert_close(loc, h[:, :3])
    torch.testing.assert_close(scale, expected)
    tr = pyro.poutine.trace(guide).get_trace(x)
    site = tr.nodes["z"]
    assert site["value"].shape == (4, 3) and site["fn"].has_rsample
    assert [f.name for f in site["cond_indep_stack"]] == ["data"]
    site["value"].sum().backward()  # reparameterized: gradients reach the encoder
    assert guide.encoder[0].weight.grad is not None


def test_custom_site_and_plate_names_and_extra_args():
    guide = AmortizedNormal(5, 2, (), site="code", plate_name="rows")
    tr = pyro.poutine.trace(guide).get_trace(torch.rand(3, 5), "ignored", flag=True)
    assert tr.nodes["code"]["value"].shape == (3, 2)
    assert [f.name for f in tr.nodes["code"]["cond_indep_stack"]] == ["rows"]


def test_invalid_arguments():
    with pytest.raises(ConfigError, match="scale_transform"):
        AmortizedNormal(5, 2, scale_transform="abs")
    with pytest.raises(ConfigError, match="min_scale"):
        AmortizedNormal(5, 2, min_scale=-1.0)
    with pytest.raises(ConfigError, match="x_dim"):
        AmortizedNormal(0, 2)
    with pytest.raises(DataError, match=r"shape \[N, 5\]"):
        AmortizedNormal(5, 2).encode(torch.zeros(2, 4))
