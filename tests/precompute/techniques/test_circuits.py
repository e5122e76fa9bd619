"""Weights between units (precompute/linear_paths.py, stored by the circuits technique): planted weights come
back exactly, expanded weights of linear stacks equal the composed kernel and a brute-force Jacobian, bad
pairs and nonlinear paths get clear errors, and the technique's rows reach `microscope unit --json`."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from precompute.linear_paths import CircuitError, NotLinearPath, expanded_weights, strongest

pytestmark = pytest.mark.integration  # runs hand-built nets and the bundled model


def planted() -> nn.Sequential:
    """Layer "0": 4 units; layer "2": 3 units, each reading layer 0 through a hand-set 3x3 kernel."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1)).double()
    with torch.no_grad():
        w = torch.zeros(3, 4, 3, 3, dtype=torch.float64)
        w[0, 2] = 1.0                      # unit 0: strongly excited by unit 2 (sum 9)
        w[0, 1, 1, 1] = -4.0               # ... inhibited by unit 1 (sum -4)
        w[0, 3, 0, :] = 0.5                # ... a little excited by unit 3 (sum 1.5)
        w[1, 0] = torch.tensor([[1., 0., -1.], [2., 0., -2.], [1., 0., -1.]])  # unit 1: an edge of unit 0, sum 0
        w[1, 3, 2, 2] = -0.25
        w[2, :, 1, 1] = torch.tensor([0.1, -0.2, 0.3, -0.4])
        model[2].weight.copy_(w)
        model[2].bias.fill_(5.0)  # a bias is no weight between units
    return model.eval()


def test_planted_weights_come_back_exactly_with_their_signs():
    pair = expanded_weights(planted(), "0", "2", 16)
    w = planted()[2].weight.detach().numpy()
    assert pair.window[2:] == (3, 3) and pair.support == (3, 3) and pair.centre == (8, 8)
    np.testing.assert_allclose(pair.kernels, w, atol=1e-12)
    np.testing.assert_allclose(pair.weights, w.sum(axis=(2, 3)), atol=1e-12)
    np.testing.assert_allclose(pair.norms, np.sqrt((w ** 2).sum(axis=(2, 3))), atol=1e-12)
    positive, negative = strongest(pair.weights[0], 16)
    assert positive.tolist() == [2, 3] and negative.tolist() == [1]
    positive, negative = strongest(pair.weights[2], 2)
    assert positive.tolist() == [2, 0] and negative.tolist() == [3, 1]
    assert pair.weights[1, 0] == 0 and pair.norms[1, 0] > 3  # an edge kernel: no net weight, a strong norm


def composed(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The kernel of conv(outer) after conv(inner), both cross-correlations with 'same' padding."""
    o, m, ka, _ = outer.shape
    _, i, kb, _ = inner.shape
    out = np.zeros((o, i, ka + kb - 1, ka + kb - 1))
    for a in range(ka):
        for b in range(ka):
            for c in range(kb):
                for d in range(kb):
                    out[:, :, a + c, b + d] += outer[:, :, a, b] @ inner[:, :, c, d]
    return out


def test_expanded_weights_of_a_linear_stack_equal_the_composed_kernel():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(),  # "0": the source
                          nn.Conv2d(5, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU6(),
                          nn.Conv2d(6, 4, 3, padding=1)).double().eval()  # "5": the target
    bn = model[3]
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
    pair = expanded_weights(model, "0", "5", 20)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    inner = model[2].weight.detach().numpy() * scale[:, None, None, None]  # batch norm folded into the conv
    expected = composed(model[5].weight.detach().numpy(), inner)
    assert pair.kernels.shape == (4, 5, 5, 5) and pair.window == (8, 8, 5, 5)
    np.testing.assert_allclose(pair.kernels, expected, atol=1e-10)
    np.testing.assert_allclose(pair.weights, expected.sum(axis=(2, 3)), atol=1e-10)


class Block(nn.Module):
    """A residual inverted bottleneck: 1x1 expansion, depthwise 3x3, grouped 1x1 projection, max pool on the
    shortcut side, batch norm everywhere: the kinds of layer expanded weights go through."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(8, 4, 1, groups=2), nn.BatchNorm2d(4))
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)

    def forward(self, x, linear=False):
        y = self.expand[1](self.expand[0](x)) if linear else self.expand(x)
        y = self.dw[1](self.dw[0](y)) if linear else self.dw(y)
        shortcut = nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False) if linear else self.pool(x)
        return self.project(y) + shortcut


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.block = Block()
        self.head = nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def forward(self, x):
        return self.head(torch.relu(self.block(torch.relu(self.stem(x)))))


def net_with_batchnorm_statistics(seed: int, biases: bool) -> Net:
    """`Net` in float64 with random BatchNorm statistics and scales (and shifts), so folding them matters."""
    torch.manual_seed(seed)
    net = Net().double().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                if biases:
                    m.bias.normal_()
    return net


def test_expanded_weights_equal_a_brute_force_jacobian_of_the_linearised_path():
    net = net_with_batchnorm_statistics(seed=2, biases=True)
    pair = expanded_weights(net, "stem", "head", 32)  # stem map 16x16, head map 8x8: centre (4, 4)

    def linear(a):  # the same network written out with its nonlinearities removed by hand
        return net.head(net.block(a, linear=True))[0, :, 4, 4]

    jac = torch.autograd.functional.jacobian(linear, torch.zeros(1, 4, 16, 16, dtype=torch.float64))[:, 0]
    jac = jac.numpy()
    top, left, kh, kw = pair.window
    np.testing.assert_allclose(pair.weights, jac.sum(axis=(2, 3)), atol=1e-10)
    np.testing.assert_allclose(pair.kernels, jac[:, :, top:top + kh, left:left + kw], atol=1e-10)
    assert np.abs(jac).sum() == pytest.approx(np.abs(jac[:, :, top:top + kh, left:left + kw]).sum())
    # Fewer units, or the forward (per source cell) and backward (per unit) routes, give the same numbers.
    some = expanded_weights(net, "stem", "head", 32, units=[5, 1])
    np.testing.assert_allclose(some.weights, pair.weights[[5, 1]], atol=1e-10)
    inner = expanded_weights(net, "stem", "block", 32)
    tiny_batches = expanded_weights(net, "stem", "block", 32, batch_floats=1)
    np.testing.assert_allclose(inner.kernels, tiny_batches.kernels, atol=1e-10)


def test_a_crop_of_the_source_map_gives_the_whole_maps_weights_on_a_strided_residual_net():
    """The weights are computed on the part of the source map the target's centre depends on; through stride-2
    convolutions, a residual block and pooling, on even and odd map sizes, that must change nothing."""
    net = net_with_batchnorm_statistics(seed=3, biases=False)
    for size in (64, 62):  # stem maps 32x32 and 31x31: the odd one puts the centre off the stride grid's middle
        for source, target in (("stem", "head"), ("stem", "block"), ("block", "head")):
            whole = expanded_weights(net, source, target, size, crop=False)
            cropped = expanded_weights(net, source, target, size)
            assert whole.crop is None and cropped.crop is not None
            top, left, h, w = cropped.crop
            assert h * w < whole.source_map[0] * whole.source_map[1] / 4  # a real crop, not the whole map
            assert cropped.window == whole.window and cropped.centre == whole.centre
            np.testing.assert_allclose(cropped.kernels, whole.kernels, atol=1e-12)
            np.testing.assert_allclose(cropped.weights, whole.weights, atol=1e-12)
            np.testing.assert_allclose(cropped.norms, whole.norms, atol=1e-12)
    # And both equal the brute-force Jacobian of the network written out linearly.
    pair = expanded_weights(net, "stem", "head", 64)  # stem map 32x32, head map 16x16: centre (8, 8)
    jac = torch.autograd.functional.jacobian(lambda a: net.head(net.block(a, linear=True))[0, :, 8, 8],
                                             torch.zeros(1, 4, 32, 32, dtype=torch.float64))[:, 0].numpy()
    np.testing.assert_allclose(pair.weights, jac.sum(axis=(2, 3)), atol=1e-10)
    np.testing.assert_allclose(pair.norms, np.sqrt((jac ** 2).sum(axis=(2, 3))), atol=1e-10)


def test_the_forward_route_is_exact_under_large_constants(monkeypatch):
    """Few source cells and many target units: one forward pass per source cell, minus the pass at zero. Large
    biases (1000, as batch-norm shifts can make) must not eat the float32 difference."""
    from precompute import linear_paths

    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Conv2d(2, 64, 3, padding=1)).eval()
    with torch.no_grad():
        model[2].bias.fill_(1000.0)
    calls = []
    route = linear_paths._by_forward
    monkeypatch.setattr(linear_paths, "_by_forward", lambda *a: calls.append(1) or route(*a))
    pair = expanded_weights(model, "0", "2", 40)
    assert calls  # 2 x 3 x 3 = 18 source cells against 64 units: the forward route ran
    w = model[2].weight.detach().numpy()
    np.testing.assert_allclose(pair.kernels, w, rtol=0, atol=1e-6 * np.abs(w).max())
    np.testing.assert_allclose(pair.weights, w.sum(axis=(2, 3), dtype=np.float64), rtol=0, atol=1e-5 * np.abs(w).max())


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=1)


class Gate(nn.Module):
    """Squeeze-excite: the map scaled by a function of itself."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Conv2d(4, 4, 1)
        self.out = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        return self.out(x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True))))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.qkv = nn.Conv2d(4, 12, 1)
        self.out = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)
        attn = torch.softmax(q.transpose(1, 2) @ k / 2.0, dim=-1)
        return self.out((v @ attn.transpose(1, 2)).reshape(x.shape))


class Squared(nn.Module):
    """A nonlinearity no list names: only the numerical check can catch it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        return self.out(torch.special.expit(x))


def test_bad_pairs_get_one_clear_line():
    model = planted()
    with pytest.raises(CircuitError, match=r"^layer 0 runs before 2: choose a source layer earlier"):
        expanded_weights(model, "2", "0", 16)
    with pytest.raises(CircuitError, match=r"^source and target are the same layer \(2\)"):
        expanded_weights(model, "2", "2", 16)
    with pytest.raises(CircuitError, match=r"^no layer '7' in this model"):
        expanded_weights(model, "0", "7", 16)
    with pytest.raises(CircuitError, match=r"^unit 3 is out of range for layer 2 \(units 0-2\)"):
        expanded_weights(model, "0", "2", 16, units=[3])
    with pytest.raises(CircuitError, match=r"^no path from a to b: the target does not depend on the source"):
        expanded_weights(Branches(), "a", "b", 8)


@pytest.mark.parametrize("model, match", [
    (Gate(), r"not a linear path: sigmoid in the model bends the activations"),
    (Attention(), r"not a linear path: .*(multiplies two activations|softmax)"),
    (Squared(), r"not a linear path from conv to out: the linearised pass is not affine"),
])
def test_nonlinear_paths_are_refused(model, match):
    with pytest.raises(NotLinearPath, match=match):
        expanded_weights(model.eval(), "conv", "out", 8)


def test_a_vision_transformer_block_is_not_a_linear_path():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2).eval()
    with pytest.raises(NotLinearPath, match=r"^not a linear path: layer_norm in blocks\.1\.norm1 bends"):
        expanded_weights(vit, "blocks.0", "blocks.1", 224)


def test_bundled_head_reads_the_last_block_through_its_own_kernel():
    """conv_head is a plain 1x1 convolution of blocks.6: its weights are that convolution's, exactly."""
    from precompute.models import build, resolve

    model = build(resolve("efficientnet_lite0.bundled"), pretrained=True, device=torch.device("cpu"))
    pair = expanded_weights(model, "blocks.6", "conv_head", 224, units=list(range(0, 1280, 97)))
    kernel = model.conv_head.weight.detach().numpy()[pair.units]
    assert pair.kernels.shape == kernel.shape
    np.testing.assert_allclose(pair.kernels, kernel, rtol=1e-4, atol=1e-6)


PLANTED_FACTORY = '''
import torch
from torch import nn


def build():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(3, 2, 1))
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(0.01)
        model[2].weight[0, 2] = 1.0
        model[2].weight[0, 1, 1, 1] = -4.0
        model[4].weight[:, :, 0, 0] = torch.tensor([[0.5, -3.0, 0.0], [2.0, 0.0, -1.0]])
    return model
'''


def test_unit_json_reports_inputs_and_outputs_by_absolute_weight(tmp_path, capsys):
    from precompute.cli import main
    from precompute.models import Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request

    factory = tmp_path / "planted.py"
    factory.write_text(PLANTED_FACTORY)
    store = tmp_path / "s.duckdb"
    precompute(Request(model=f"{factory}:build", store=store, techniques="circuits", max_images=8, progress=False,
                       overrides=Overrides(name="planted", input_size=32)))
    assert main(["unit", "planted", "2", "0", "--json", "--store", str(store)]) == 0
    record = json.loads(capsys.readouterr().out)["circuits"]
    inputs = [(n["layer"], n["unit"], round(n["weight"], 4)) for n in record["inputs"]]
    assert inputs == [("0", 2, 9.0), ("0", 1, -3.92), ("0", 0, 0.09), ("0", 3, 0.09)]
    outputs = [(n["layer"], n["unit"], round(n["weight"], 4)) for n in record["outputs"]]
    assert outputs == [("4", 1, 2.0), ("4", 0, 0.5)]
    assert main(["unit", "planted", "4", "1", "--json", "--store", str(store)]) == 0
    record = json.loads(capsys.readouterr().out)["circuits"]
    assert [(n["unit"], n["weight"]) for n in record["inputs"]] == [(0, 2.0), (2, -1.0)]
    assert record["outputs"] == [] and list(record["expanded"]) == ["0"]
    assert record["expanded"]["0"][0]["unit"] == 2  # through unit 0 of layer 2: weight 2 x 9
