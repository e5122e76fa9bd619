"""InceptionV1 as OpenAI Microscope and the Circuits papers show it: the GoogLeNet of Lucid's modelzoo
(`InceptionV1`, the graph known as inception5h), rebuilt here from its published layer table so that its
module paths are Lucid's layer names (`conv2d0` ... `mixed5b`) and each mixed layer's units are numbered as
Lucid numbers them: the concatenation, in this order, of the 1x1, 3x3, 5x5 and pool-projection branches,
each after its ReLU. `mixed4c` unit 447 here is Microscope's `mixed4c_0` unit 447.

The weights are the PyTorch conversion of Lucid's graph that Lucent loads (`WEIGHTS_URL`); they are fetched
into torch.hub's checkpoint folder on first use and mapped onto this module by name (`_file_key`). The input
is Lucid's: RGB pixels in [0, 255] minus 117, which the registry expresses as mean 117/255 and std 1/255.

Two choices differ from that conversion's own forward pass, both so that the network is Lucid's and reads
well through the circuits engine (`precompute.linear_paths`): max pools pad with `ceil_mode` rather than
an explicit -inf border (the same windows and results; an average pool, the linearised stand-in, then
leaves the border out instead of averaging -inf), and local response normalisation takes the parameters of
Lucid's graph (see `LRN`). The forward pass returns the 1008 logits (Lucid's `softmax2_pre_activation`),
not their softmax.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"
WEIGHTS_FILE = "inception5h.pth"
CLASSES = 1008  # inception5h's head: the 1000 ImageNet classes among padding entries, in its own order

# Lucid's InceptionV1.pb has LRN(depth_radius=5, bias=2, alpha=1e-4, beta=0.5) after conv2d0's pool and after
# conv2d2. TensorFlow sums the squares over the 11-channel window; torch divides alpha by the window size, so
# alpha is scaled by 11 here. (The conversion Lucent 0.1.8 ships uses size 9, k=1: greentfrapp/lucent#51.)
LRN = {"size": 11, "alpha": 1e-4 * 11, "beta": 0.5, "k": 2.0}

# Per mixed layer: input channels, then the output channels of the branches 1x1, 3x3 bottleneck, 3x3,
# 5x5 bottleneck, 5x5 and pool reduce, as in Lucid's graph (mixed4a's 3x3 has 204, not the paper's 208).
MIXED = {
    "mixed3a": (192, 64, 96, 128, 16, 32, 32),
    "mixed3b": (256, 128, 128, 192, 32, 96, 64),
    "mixed4a": (480, 192, 96, 204, 16, 48, 64),
    "mixed4b": (508, 160, 112, 224, 24, 64, 64),
    "mixed4c": (512, 128, 128, 256, 24, 64, 64),
    "mixed4d": (512, 112, 144, 288, 32, 64, 64),
    "mixed4e": (528, 256, 160, 320, 32, 128, 128),
    "mixed5a": (832, 256, 160, 320, 48, 128, 128),
    "mixed5b": (832, 384, 192, 384, 48, 128, 128),
}
STEM = {"conv2d0": 64, "conv2d1": 64, "conv2d2": 192}


def layer_units() -> dict[str, int]:
    """Units per layer, in forward order: what the registry's layer table declares."""
    mixed = {name: c[1] + c[3] + c[5] + c[6] for name, c in MIXED.items()}
    return {**STEM, **mixed}


class ConvReLU(nn.Module):
    """A convolution and its ReLU; `pad` (left, right, top, bottom) is TensorFlow's SAME padding where it is
    not symmetric."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, pad: tuple[int, ...] | None = None):
        super().__init__()
        self.pad = pad
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=0 if pad else kernel // 2)

    def forward(self, x):
        return F.relu(self.conv(F.pad(x, self.pad) if self.pad else x))


class Mixed(nn.Module):
    """An inception block. Its submodules carry Lucid's branch names (`3x3_bottleneck`, ...), so that each
    module path is its Lucid node name with dots."""

    BRANCHES = ("1x1", "3x3_bottleneck", "3x3", "5x5_bottleneck", "5x5", "pool_reduce")

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int):
        super().__init__()
        shapes = {"1x1": (cin, c1, 1), "3x3_bottleneck": (cin, c3r, 1), "3x3": (c3r, c3, 3),
                  "5x5_bottleneck": (cin, c5r, 1), "5x5": (c5r, c5, 5), "pool_reduce": (cin, cp, 1)}
        for name in self.BRANCHES:
            self.add_module(name, ConvReLU(*shapes[name]))

    def forward(self, x):
        branch = dict(self.named_children())
        pooled = F.max_pool2d(x, 3, stride=1, padding=1)  # torch pads a max pool with -inf, as Lucid's graph
        return torch.cat([branch["1x1"](x), branch["3x3"](branch["3x3_bottleneck"](x)),
                          branch["5x5"](branch["5x5_bottleneck"](x)), branch["pool_reduce"](pooled)], dim=1)


def _pool(x):
    # Lucid's stride-2 pools pad one -inf row and column at the bottom right; ceil_mode takes the same windows.
    return F.max_pool2d(x, 3, stride=2, ceil_mode=True)


class InceptionV1(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv2d0 = ConvReLU(3, 64, 7, stride=2, pad=(2, 3, 2, 3))
        self.conv2d1 = ConvReLU(64, 64, 1)
        self.conv2d2 = ConvReLU(64, 192, 3)
        for name, channels in MIXED.items():
            self.add_module(name, Mixed(*channels))
        self.fc = nn.Linear(1024, CLASSES)

    def forward(self, x):
        x = F.local_response_norm(_pool(self.conv2d0(x)), **LRN)
        x = _pool(F.local_response_norm(self.conv2d2(self.conv2d1(x)), **LRN))
        for name in MIXED:
            if name in ("mixed4a", "mixed5a"):
                x = _pool(x)
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _file_key(key: str) -> str:
    """The weights file's name for one of this module's parameters: `mixed4c.3x3_bottleneck.conv.weight` is
    `mixed4c_3x3_bottleneck_pre_relu_conv.weight` there, `fc.bias` is `softmax2_pre_activation_matmul.bias`."""
    path, _, param = key.rpartition(".")
    if path == "fc":
        return f"softmax2_pre_activation_matmul.{param}"
    return path.removesuffix(".conv").replace(".", "_") + f"_pre_relu_conv.{param}"


def weights_path() -> Path:
    """Where the weights are looked for and downloaded to: torch.hub's checkpoints ($TORCH_HOME/hub)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def load_weights(model: InceptionV1, state: dict[str, torch.Tensor]) -> None:
    """Loads the weights file's tensors by name; raises ValueError naming the first tensor that does not fit."""
    ours = model.state_dict()
    wanted = {_file_key(key): key for key in ours}
    missing = sorted(set(wanted) - set(state))
    extra = sorted(set(state) - set(wanted))
    if missing or extra:
        raise ValueError(f"missing tensor {missing[0]}" if missing else f"unexpected tensor {extra[0]}")
    for name, key in wanted.items():
        if tuple(state[name].shape) != tuple(ours[key].shape):
            raise ValueError(f"{name} has shape {tuple(state[name].shape)}, expected {tuple(ours[key].shape)}")
    model.load_state_dict({key: state[name] for name, key in wanted.items()})
