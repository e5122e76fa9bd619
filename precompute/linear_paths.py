"""Linearised paths: the linear map between two layers of a network with its nonlinearities set aside.

Between a source layer and a later target layer, the weight of (target unit o, source unit i) is the
effective linear map from the source's activation map to the target's activation at the centre of its map,
with the nonlinearities set aside: ReLU-like activations become the identity, max pooling becomes average
pooling (the choice of "Visualizing Weights", Voss et al., Distill 2021, for expanded weights), batch norm in
eval mode is affine and folds in. It is read off by autograd: the gradient of the target's centre activation
with respect to the source map, batched over target units, is the kernel of that linear map (constants such
as biases drop out of a gradient). Where the source feeds the target through one convolution this is that
convolution's kernel slice; through a block (depthwise and grouped convolutions, 1x1 projections, pooling,
residual additions) it is the block's "expanded weights". A path that multiplies two activations
(squeeze-excite gating, attention), normalises by the activations' own statistics (layer norm, softmax) or
bends them another way is not linear: asking for its weights raises NotLinearPath with the operation and
module that make it so, and every result is checked numerically against the linearised forward pass before
it is returned.

`expanded_weights` is the entry point; the circuits technique (`precompute.techniques.circuits`) stores its
results for neighbouring layers, and any technique that reads a network's weights through a path can reuse it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from precompute.hooks import capture, substitute
from precompute.hooks import run as forward
from precompute.layers import as_maps
from store.errors import MicroscopeError, first_line

MAX_KERNEL = 11  # side of the returned kernel window in source-map cells; sums and norms use the whole kernel
BATCH_FLOATS = 1 << 23  # source-map values per backward batch: bounds memory on large early maps
SMALL_INPUT = 32  # side of the blank image that runs the layers before the source (only constants come of them)
IMPULSE = 2.0 ** 12  # the forward route's impulse: large against the path's constants (see _by_forward)


class CircuitError(MicroscopeError, ValueError):
    """A layer pair whose weights cannot be computed; the message is one line for the user."""


class NotLinearPath(CircuitError):
    """The path between two layers multiplies, normalises or otherwise bends activations."""


# ---- the linearised forward pass ------------------------------------------------------------------------

# Elementwise activations: set aside (the identity), as the expanded weights of Visualizing Weights do.
SET_ASIDE = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_",
             "selu", "selu_", "celu", "celu_", "gelu", "silu", "mish", "hardswish", "softplus", "prelu", "rrelu",
             "rrelu_", "threshold", "threshold_", "clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_",
             "clamp_max", "clamp_max_"}
# Operations that are not linear in their input; with an activation among their arguments they end the path.
NONLINEAR = {"softmax", "log_softmax", "_softmax", "layer_norm", "group_norm", "instance_norm", "local_response_norm",
             "normalize", "scaled_dot_product_attention", "multi_head_attention_forward", "sigmoid", "sigmoid_",
             "hardsigmoid", "tanh", "tanh_", "exp", "exp_", "log", "sqrt", "rsqrt", "pow", "__pow__", "__rpow__",
             "abs", "abs_", "square", "max", "amax", "min", "amin", "sort", "topk", "logsumexp", "norm", "erf",
             "sign", "max_pool1d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool3d", "lp_pool2d"}
# Bilinear operations: linear in each argument, not in two activations at once (gating, attention).
PRODUCTS = {"mul", "mul_", "__mul__", "__rmul__", "__imul__", "matmul", "__matmul__", "__rmatmul__", "bmm", "mm",
            "einsum", "baddbmm", "addmm", "addbmm", "outer", "bilinear"}
DIVISIONS = {"div", "div_", "__truediv__", "__itruediv__", "true_divide", "__floordiv__"}


def _tensors(values) -> list[torch.Tensor]:
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out += _tensors(v)
    return out


class Linearised(TorchFunctionMode):
    """A torch function mode that runs a forward pass with its nonlinearities set aside, and raises
    NotLinearPath at the first operation that is not linear in the activations that require grad."""

    def __init__(self, where):
        super().__init__()
        self.where = where  # () -> the module path being run, for messages

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in SET_ASIDE:
            return args[0] if args else kwargs["input"]
        if name == "max_pool2d":
            return self._avg_pool(args, kwargs)
        if name == "adaptive_max_pool2d":
            x = args[0] if args else kwargs["input"]
            size = args[1] if len(args) > 1 else kwargs["output_size"]
            return F.adaptive_avg_pool2d(x, size)
        if name in ("cat", "concat", "concatenate", "stack"):
            args = (_same_batch(args[0]), *args[1:]) if args else args
        live = [t for t in _tensors((*args, *kwargs.values())) if t.requires_grad]
        if live:
            if name in NONLINEAR:
                raise NotLinearPath(f"not a linear path: {name} in {self.where()} bends the activations "
                                    "(no expanded weights through it)")
            if name in PRODUCTS and len(live) >= 2:
                raise NotLinearPath(f"not a linear path: {self.where()} multiplies two activations ({name}: "
                                    "gating or attention)")
            if name in DIVISIONS and len(args) > 1 and isinstance(args[1], torch.Tensor) and args[1].requires_grad:
                raise NotLinearPath(f"not a linear path: {self.where()} divides by an activation ({name})")
            if name == "batch_norm" and (args[5] if len(args) > 5 else kwargs.get("training", False)):
                raise NotLinearPath(f"not a linear path: batch norm in {self.where()} uses batch statistics "
                                    "(training mode)")
        return func(*args, **kwargs)

    @staticmethod
    def _avg_pool(args, kwargs):
        names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        a = {**dict(zip(names, args)), **kwargs}
        if a.get("return_indices") or a.get("dilation", 1) not in (1, (1, 1)):
            raise NotLinearPath("not a linear path: max pooling with indices or dilation has no average-pool "
                                "counterpart")
        # Padding only ever loses to real values in a max pool, so the average leaves it out too.
        return F.avg_pool2d(a["input"], a["kernel_size"], a.get("stride") or None, a.get("padding", 0),
                            a.get("ceil_mode", False), count_include_pad=False)


def _same_batch(tensors):
    """Activations carry the batch of target units; tensors from before the source layer keep batch 1.
    Arithmetic broadcasts them; concatenation needs them expanded."""
    if not isinstance(tensors, (list, tuple)):
        return tensors
    batch = max((t.shape[0] for t in tensors if isinstance(t, torch.Tensor) and t.ndim), default=1)
    return [t.expand(batch, *t.shape[1:]) if isinstance(t, torch.Tensor) and t.ndim and t.shape[0] == 1 else t
            for t in tensors]


class Where:
    """The module path being run (innermost first), kept by hooks on every module; names the culprit."""

    def __init__(self):
        self.stack: list[str] = []

    def leave(self) -> None:  # a forward hook: must return None, or it would replace the module's output
        if self.stack:
            self.stack.pop()

    def __call__(self) -> str:
        return (self.stack[-1] or "the model") if self.stack else "the model"


@contextlib.contextmanager
def _prepared(model: nn.Module):
    """Eval mode (batch norm affine, dropout off) and frozen parameters, so that only activations downstream of
    the source require grad; both restored afterwards. Also yields a function naming the module being run."""
    training = model.training
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    where = Where()
    stack = where.stack
    handles = []
    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda _m, _i, path=path: stack.append(path)))
        handles.append(module.register_forward_hook(lambda _m, _i, _o: where.leave()))
    model.eval()
    for p, _ in frozen:
        p.requires_grad_(False)
    try:
        yield where
    finally:
        for h in handles:
            h.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(training)


# ---- weights between two layers -----------------------------------------------------------------------------


@dataclass
class PairWeights:
    """The linear map from `source`'s activation map to `target`'s centre activation, per target unit."""

    source: str
    target: str
    units: np.ndarray  # target units, in the order of the rows below
    weights: np.ndarray  # (units, source units) signed sum of each kernel
    norms: np.ndarray  # (units, source units) L2 norm of each kernel
    kernels: np.ndarray  # (units, source units, kh, kw) float32: the kernels inside `window`
    window: tuple[int, int, int, int]  # top, left, height, width in the source map
    support: tuple[int, int]  # height and width of the kernels' nonzero extent (window is at most MAX_KERNEL)
    source_map: tuple[int, int]
    centre: tuple[int, int]  # the target map position the weights are read at
    crop: tuple[int, int, int, int] | None = None  # top, left, height, width of the source crop computed on


class _Runner:
    """Forward passes with the source layer's output replaced by given rows (one per target unit or basis
    vector), linearised, cut after the target layer. What runs before the source only makes constants (no
    gradient flows there), so it runs on one small blank image; where the model cannot mix that with the rows
    (a skip connection from before the source, a reshape by the input's batch), on one full-size image, and
    failing that on the image repeated per row."""

    MODES = ("small", "one", "repeat")

    def __init__(self, model, source: str, target: str, input_size: int, device, where):
        self.model, self.source, self.target, self.where = model, source, target, where
        dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.float32)
        self.image = torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype)
        self.small = torch.zeros(1, 3, min(input_size, SMALL_INPUT), min(input_size, SMALL_INPUT), device=device,
                                 dtype=dtype)
        self.mode = 0 if input_size > SMALL_INPUT else 1
        with capture(model, [source, target]) as outputs, torch.no_grad():
            shapes = forward(model, self.image, outputs)
        missing = [n for n in (source, target) if n not in shapes]
        if missing:
            raise CircuitError(f"layer {missing[0]} does not run in the model's forward pass")
        if list(shapes)[0] != source:
            raise CircuitError(f"layer {target} runs before {source}: choose a source layer earlier in the "
                               "network than the target")
        raw = shapes[source]
        # Token sequences (batch, tokens, dim) are let in as far as the linearity check: a transformer block's
        # path ends there (layer norm, attention) with its reason; a linear one is refused further down.
        self.tokens = isinstance(raw, torch.Tensor) and raw.ndim == 3
        if not isinstance(raw, torch.Tensor) or raw.ndim not in (2, 3, 4) or not raw.is_floating_point():
            shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
            raise CircuitError(f"layer {source} has an output of shape {shape}; circuits need convolution maps "
                               "or vectors")
        self.source_shape = tuple(raw.shape[1:])
        self.target_units = int(as_maps(shapes[target]).shape[1])
        self.target_map = tuple(as_maps(shapes[target]).shape[-2:])

    def _pass(self, rows: torch.Tensor, target_map: tuple[int, int] | None) -> torch.Tensor:
        replaced = []

        def swap(output):
            if replaced:  # a module run twice: only its first output is the source layer
                return None
            replaced.append(True)
            return rows.clone()  # not the leaf itself: the model may modify its input in place

        image = {"small": self.small, "one": self.image,
                 "repeat": self.image.expand(rows.shape[0], -1, -1, -1)}[self.MODES[self.mode]]
        self.where.stack.clear()  # a pass cut short after the target leaves its enclosing modules on the stack
        with substitute(self.model, self.source, swap), capture(self.model, [self.target]) as outputs, \
                Linearised(self.where):
            out = forward(self.model, image, outputs).get(self.target)
        if out is None or not replaced:
            raise RuntimeError("the source layer did not run before the target")
        out = as_maps(out)
        if (target_map and tuple(out.shape[-2:]) != target_map) or out.shape[0] != rows.shape[0]:
            raise RuntimeError("the target's map depends on the image size")
        if rows.requires_grad and not out.requires_grad:
            raise CircuitError(f"no path from {self.source} to {self.target}: the target does not depend on the "
                               "source (parallel branches?)")
        return out

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """The target's maps (batch, units, h, w) for source outputs `rows` (batch, *source_shape)."""
        while True:
            try:
                return self._pass(rows, self.target_map)
            except CircuitError:
                raise
            except Exception as exc:  # shape checks raise RuntimeError, AssertionError, ValueError
                if self.mode + 1 >= len(self.MODES):
                    raise CircuitError(f"cannot run {self.source} to {self.target} on its own: "
                                       f"{first_line(exc)}") from exc
                self.mode += 1

    def cropped(self, rows: torch.Tensor, target_map: tuple[int, int] | None = None) -> torch.Tensor:
        """The target's maps for rows that are a crop of the source map (`target_map`: the cropped target's
        size, None while it is being found). No fallback to another mode: a failure (an image-sized tensor from
        before the source meeting the crop) means "use the whole map"."""
        return self._pass(rows, target_map)


def expanded_weights(model: nn.Module, source: str, target: str, input_size: int, device="cpu",
                     units: list[int] | None = None, max_kernel: int = MAX_KERNEL,
                     batch_floats: int = BATCH_FLOATS, crop: bool = True) -> PairWeights:
    """The weights from every unit of `source` to each unit of `target` (all by default), read at the centre
    of the target's map. Raises CircuitError for a bad pair, NotLinearPath where the path is not linear.
    With `crop`, the map is computed on the part of the source map the centre depends on, where that gives
    the same gradient as the whole map (see _crop); `crop=False` always uses the whole map."""
    modules = dict(model.named_modules())
    for name in (source, target):
        if name not in modules:
            raise CircuitError(f"no layer {name!r} in this model")
    if source == target:
        raise CircuitError(f"source and target are the same layer ({source}): pick an earlier source")
    device = torch.device(device)
    with _prepared(model) as where:
        runner = _Runner(model, source, target, input_size, device, where)
        units = list(range(runner.target_units)) if units is None else [int(u) for u in units]
        bad = [u for u in units if not 0 <= u < runner.target_units]
        if bad:
            raise CircuitError(f"unit {bad[0]} is out of range for layer {target} (units 0-{runner.target_units - 1})")
        window, support, centre, probe = _window(runner, device, max_kernel)
        if runner.tokens:
            raise CircuitError(f"layer {source} outputs a token sequence: circuits need convolution maps or vectors")
        cut = _crop(runner, probe, centre, device) if crop else None
        if cut is None:
            run, shape, at, (y0, x0) = runner, runner.source_shape, centre, (0, 0)
        else:
            run, shape, at, (y0, x0) = (lambda rows: runner.cropped(rows, cut.target_map)), cut.shape, cut.centre, \
                cut.offset
        local = (window[0] - y0, window[1] - x0, window[2], window[3])  # the kernel window inside the crop
        per = max(1, batch_floats // max(1, math.prod(shape)))
        # A forward pass per source cell of the window, or a backward pass per target unit: each costs about a
        # forward pass over the (cropped) map. Forward needs the window to hold the whole kernel (not cut to
        # max_kernel).
        cells = shape[0] * window[2] * window[3]
        if support == window[2:] and cells < len(units):
            weights, norms, kernels = _by_forward(run, shape, units, local, at, per, device, runner.image.dtype)
        else:
            weights, norms, kernels = _by_backward(run, shape, units, local, at, per, device, runner.image.dtype)
        h, w = as_maps(torch.zeros(1, *runner.source_shape)).shape[-2:]
        pair = PairWeights(source, target, np.asarray(units), weights, norms, kernels, window, support, (h, w),
                           centre, None if cut is None else (y0, x0, *shape[1:]))
        _verify(runner, pair, device)  # always on the whole map: also checks the crop
    return pair


def _by_backward(run, shape, units, window, centre, per, device, dtype):
    """One gradient of the target's centre activation per unit, `per` units at a time. The path is linear, so
    its gradient does not depend on where it is taken: one forward pass on `per` zero rows builds a graph that
    every chunk of units reuses, each row seeded with its own unit (batched cotangents through vmap were
    several times slower on CPU)."""
    top, left, kh, kw = window
    n = math.ceil(len(units) / math.ceil(len(units) / per))  # even chunks: no idle rows in the last one
    rows = _zeros(n, shape, device, dtype).requires_grad_(True)
    with torch.enable_grad():
        out = run(rows)[:, :, centre[0], centre[1]]  # (n, target units)
    weights, norms, kernels = [], [], []
    for start in range(0, len(units), n):
        chunk = torch.tensor(units[start:start + n], device=device)
        seed = torch.zeros_like(out)
        seed[torch.arange(len(chunk), device=device), chunk] = 1.0
        (grad,) = torch.autograd.grad(out, rows, seed, retain_graph=start + n < len(units))
        grad = as_maps(grad[:len(chunk)])
        weights.append(grad.sum(dim=(2, 3)).double().cpu().numpy())
        norms.append(grad.double().pow(2).sum(dim=(2, 3)).sqrt().cpu().numpy())
        # clone: a view of the window would keep each chunk's whole gradient map alive until the end
        kernels.append(grad[:, :, top: top + kh, left: left + kw].float().clone().cpu().numpy())
    return np.concatenate(weights), np.concatenate(norms), np.concatenate(kernels)


def _zeros(n, shape, device, dtype) -> torch.Tensor:
    """n zero rows of the source's shape; maps channels-last, where oneDNN's depthwise and 1x1 convolutions
    ran 1.6x faster on CPU (forward and backward, EfficientNet-Lite0's blocks)."""
    rows = torch.zeros(n, *shape, device=device, dtype=dtype)
    return rows.to(memory_format=torch.channels_last) if rows.ndim == 4 else rows


def _by_forward(run, shape, units, window, centre, per, device, dtype):
    """One linearised forward pass per source cell of the window (an impulse there, minus the pass at zero: the
    map is affine), batched; each gives that cell's weight to every target unit at once. The pass at zero
    carries the path's constants (biases, batch-norm shifts); against a unit impulse they swamped the float32
    difference (3e-4 of the largest weight off, EfficientNet-Lite0 blocks.5 -> conv_head), so the impulse is
    IMPULSE, a power of two (dividing by it is exact)."""
    top, left, kh, kw = window
    channels = as_maps(torch.zeros(1, *shape)).shape[1]
    cells = [(c, y, x) for c in range(channels) for y in range(top, top + kh) for x in range(left, left + kw)]
    index = torch.tensor(units, device=device)
    columns = []
    with torch.no_grad():
        base = run(torch.zeros(1, *shape, device=device, dtype=dtype))[0, index, centre[0], centre[1]]
        for start in range(0, len(cells), per):
            chunk = cells[start:start + per]
            rows = _zeros(len(chunk), shape, device, dtype)
            maps = as_maps(rows)
            for i, (c, y, x) in enumerate(chunk):
                maps[i, c, y, x] = IMPULSE
            columns.append((run(rows)[:, index, centre[0], centre[1]].double() - base.double()).cpu() / IMPULSE)
    flat = torch.cat(columns)  # (cells, units)
    kernels = flat.T.reshape(len(units), channels, kh, kw)
    return (kernels.sum(dim=(2, 3)).numpy(), kernels.pow(2).sum(dim=(2, 3)).sqrt().numpy(),
            kernels.float().numpy())


@dataclass
class _Cut:
    offset: tuple[int, int]  # top, left of the crop in the source map
    shape: tuple[int, int, int]  # channels, height, width of the crop
    target_map: tuple[int, int]  # the target's map computed from the crop
    centre: tuple[int, int]  # the original centre, in that map


def _crop(runner: _Runner, probe, centre, device) -> _Cut | None:
    """The smallest crop of the source map that holds every cell the target's centre depends on, placed on the
    path's stride so that the crop's target grid lines up with the whole map's; None where it would not pay
    or does not reproduce the whole map's gradient. A target unit's backward pass costs about the area it
    runs on, and the centre of a 56x56 map depends on a few cells; cropping to them is what makes deep
    networks affordable. It is exact when the crop holds the centre's whole receptive field: every cell the
    centre reads, at every layer of the path, is then computed from the same inputs, with zero padding only
    where the whole map has it too (a crop at the map's border keeps that border). The crop is the probe's
    nonzero extent, which can be smaller than the receptive field (a kernel with a zero rim), and the stride
    is guessed from the map sizes; so the probe's gradient (a random mix of all units' centres) must come out
    of the crop as it did from the whole map, to float32 rounding, or the whole map is used."""
    grad, mix = probe
    if len(runner.source_shape) != 3:
        return None
    (channels, height, width), (th, tw) = runner.source_shape, runner.target_map
    ys, xs = torch.nonzero(grad.abs().sum(dim=0) > 0, as_tuple=True)

    def span(lo, hi, size, out, c):
        stride = max(1, round(size / out))  # the path's stride from source to target
        start = lo - lo % stride
        return start, hi - start, c - start // stride

    y0, ch, cy = span(int(ys.min()), int(ys.max()) + 1, height, th, centre[0])
    x0, cw, cx = span(int(xs.min()), int(xs.max()) + 1, width, tw, centre[1])
    if ch * cw > 0.75 * height * width:  # little to gain; the whole map needs no check
        return None
    rows = torch.zeros(1, channels, ch, cw, device=device, dtype=grad.dtype, requires_grad=True)
    try:
        with torch.enable_grad():
            out = runner.cropped(rows)
            if not (0 <= cy < out.shape[2] and 0 <= cx < out.shape[3]):
                return None
            (out[0, :, cy, cx] * mix).sum().backward()
    except Exception:  # noqa: BLE001 - a path that cannot run on a crop (a shape check, a reshape) keeps the map
        return None
    if rows.grad is None:
        return None
    expected = grad[:, y0:y0 + ch, x0:x0 + cw]
    if (rows.grad[0] - expected).abs().max() > 1e-5 * expected.abs().max() + 1e-12:
        return None
    return _Cut((y0, x0), (channels, ch, cw), tuple(out.shape[-2:]), (cy, cx))


def _window(runner: _Runner, device, max_kernel: int):
    """Where the kernels live in the source map: the nonzero extent of a random combination of every target
    unit's centre gradient (random weights: no cancellation between units), cut to max_kernel cells a side.
    Also returns that gradient and its mix (the probe), against which a crop is checked."""
    rows = torch.zeros(1, *runner.source_shape, device=device, dtype=runner.image.dtype, requires_grad=True)
    generator = torch.Generator(device="cpu").manual_seed(0)
    with torch.enable_grad():
        out = runner(rows)
        h, w = out.shape[-2:]
        centre = (h // 2, w // 2)
        mix = torch.randn(out.shape[1], generator=generator).to(device, out.dtype)
        (out[0, :, centre[0], centre[1]] * mix).sum().backward()
    grad = as_maps(rows.grad)[0]
    mask = grad.abs().sum(dim=0) > 0
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(ys) == 0:
        raise CircuitError(f"no path from {runner.source} to {runner.target}: the target's centre does not "
                           "depend on the source")
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    support = (y1 - y0, x1 - x0)

    def cut(lo, hi, size):
        if hi - lo <= max_kernel:
            return lo, hi - lo
        mid = (lo + hi) // 2
        start = min(max(0, mid - max_kernel // 2), size - max_kernel)
        return start, max_kernel

    top, kh = cut(y0, y1, mask.shape[0])
    left, kw = cut(x0, x1, mask.shape[1])
    return (top, left, kh, kw), support, centre, (grad.detach(), mix)


def _verify(runner: _Runner, pair: PairWeights, device) -> None:
    """The linearised pass at 0, r and 2r (r random inside the kernel window) must be affine, with r's effect
    equal to the kernels' dot product with r: catches any nonlinearity the operation lists above miss."""
    top, left, kh, kw = pair.window
    generator = torch.Generator(device="cpu").manual_seed(1)
    r = torch.zeros(1, *runner.source_shape, dtype=runner.image.dtype)
    maps = as_maps(r)  # a view for maps; a (1, C, 1, 1) view of a vector
    maps[:, :, top: top + kh, left: left + kw] = torch.randn(1, maps.shape[1], kh, kw, generator=generator)
    rows = torch.cat([torch.zeros_like(r), r, 2 * r]).to(device)
    with torch.no_grad():
        out = runner(rows)
    y = out[:, pair.units, pair.centre[0], pair.centre[1]].double().cpu().numpy()
    effect, bend = y[1] - y[0], y[2] - 2 * y[1] + y[0]
    predicted = np.einsum("uckl,ckl->u", pair.kernels.astype(np.float64), as_maps(r)[0, :, top:top + kh,
                                                                                     left:left + kw].double().numpy())
    scale = max(np.abs(predicted).max(initial=0.0), np.abs(effect).max(initial=0.0))
    tolerance = 1e-3 * scale + 1e-5 * np.abs(y).max(initial=0.0) + 1e-12
    if np.abs(bend).max(initial=0.0) > tolerance or np.abs(effect - predicted).max(initial=0.0) > tolerance:
        raise NotLinearPath(f"not a linear path from {pair.source} to {pair.target}: the linearised pass is not "
                            "affine (an operation Microscope does not recognise bends it)")


def strongest(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k largest positive and the k most negative entries, strongest first (ties by index)."""
    order = np.lexsort((np.arange(len(row)), -row))
    positive = [i for i in order[:k] if row[i] > 0]
    order = np.lexsort((np.arange(len(row)), row))
    negative = [i for i in order[:k] if row[i] < 0]
    return np.asarray(positive, dtype=np.int64), np.asarray(negative, dtype=np.int64)


# ---- responses to uniform maps: what a unit votes for ---------------------------------------------------------


class NoClassifier(CircuitError):
    """The model's output is not a (batch, classes) tensor of logits."""


def classifier_output(model: nn.Module, input_size: int, device="cpu") -> str:
    """The module whose output is the model's output: the innermost one whose forward returns the very tensor
    the model returns (timm's `classifier` or `head.fc`, torchvision's `fc`, a factory's last Linear), else
    the root module "" (a head that ends in a functional call, such as a flatten). Raises NoClassifier where the
    output is not a (batch, classes) tensor."""
    returned: list[tuple[str, object]] = []
    handles = [module.register_forward_hook(lambda _m, _i, out, path=path: returned.append((path, out)))
               for path, module in model.named_modules()]
    training = model.training
    dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.float32)
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, 3, input_size, input_size, device=torch.device(device), dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or not out.is_floating_point():
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise NoClassifier(f"the model's output is {shape}, not a (batch, classes) tensor of logits: no class votes")
    # Hooks fire innermost first, so the first module that returned the output tensor is the innermost.
    return next(path for path, value in returned if value is out)


def uniform_responses(model: nn.Module, source: str, target: str, input_size: int, device="cpu",
                      units: list[int] | None = None, batch_floats: int = BATCH_FLOATS) -> np.ndarray:
    """(target units, source units): the linearised change of each target unit (at the centre of its map; a
    classifier's logits are 1x1) when one source unit's whole map rises by 1, the same at every position. That
    is the sum of the expanded kernel over the whole source map, zero padding included: with global average
    pooling and a linear head right after the source, the head's weight column (times any affine map between,
    such as a folded batch norm). Computed by linearised forward passes, one per source unit (IMPULSE on its
    channel everywhere, minus the pass at zero, over IMPULSE, as in _by_forward), not a backward pass per target
    unit: a head has 1000 classes. `units`: the source units (all by default), in the order of the columns.
    Raises CircuitError for a bad pair, NotLinearPath where the path is not linear (checked numerically too)."""
    modules = dict(model.named_modules())
    for name in (source, target):
        if name not in modules:
            raise CircuitError(f"no layer {name!r} in this model")
    device = torch.device(device)
    with _prepared(model) as where:
        if source == target:  # the target itself: each unit moves only itself
            dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.float32)
            with capture(model, [source]) as outputs, torch.no_grad():
                image = torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype)
                size = int(as_maps(forward(model, image, outputs)[source]).shape[1])
            units = list(range(size)) if units is None else [int(u) for u in units]
            return np.eye(size)[:, units]
        runner = _Runner(model, source, target, input_size, device, where)
        if runner.tokens:
            raise CircuitError(f"layer {source} outputs a token sequence: class votes need convolution maps or vectors")
        shape = runner.source_shape
        channels = as_maps(torch.zeros(1, *shape)).shape[1]
        units = list(range(channels)) if units is None else [int(u) for u in units]
        bad = [u for u in units if not 0 <= u < channels]
        if bad:
            raise CircuitError(f"unit {bad[0]} is out of range for layer {source} (units 0-{channels - 1})")
        dtype = runner.image.dtype
        zero = _zeros(1, shape, device, dtype).requires_grad_(True)
        with torch.enable_grad():  # activations that require grad are what Linearised checks for linearity
            out = runner(zero)
        cy, cx = out.shape[2] // 2, out.shape[3] // 2
        base = out[0, :, cy, cx].detach().double()
        per = max(1, batch_floats // max(1, math.prod(shape)))
        columns = []
        with torch.no_grad():
            for start in range(0, len(units), per):
                chunk = units[start:start + per]
                rows = _zeros(len(chunk), shape, device, dtype)
                as_maps(rows)[torch.arange(len(chunk), device=device), torch.tensor(chunk, device=device)] = IMPULSE
                columns.append(((runner(rows)[:, :, cy, cx].double() - base) / IMPULSE).cpu())
        responses = torch.cat(columns).T.numpy()  # (target units, source units)
        _verify_uniform(runner, responses, units, (cy, cx), device)
    return responses


def _verify_uniform(runner: _Runner, responses: np.ndarray, units: list[int], centre, device) -> None:
    """The linearised pass at 0, r and 2r, r a random uniform map on each of the source units, must be affine
    with r's effect equal to the responses' dot product with r's levels: catches any nonlinearity the operation
    lists miss, as _verify does for kernels."""
    generator = torch.Generator(device="cpu").manual_seed(1)
    levels = torch.randn(len(units), generator=generator, dtype=torch.float64)
    r = torch.zeros(1, *runner.source_shape, dtype=runner.image.dtype)
    as_maps(r)[0, torch.tensor(units)] = levels.to(r.dtype)[:, None, None]
    rows = torch.cat([torch.zeros_like(r), r, 2 * r]).to(device)
    with torch.no_grad():
        out = runner(rows)
    y = out[:, :, centre[0], centre[1]].double().cpu().numpy()
    if not (np.isfinite(y).all() and np.isfinite(responses).all()):  # NaN would pass every comparison below
        raise CircuitError(f"the linearised path from {runner.source} to {runner.target} overflows "
                           f"{runner.image.dtype} (its gains multiply with the nonlinearities set aside)")
    effect, bend = y[1] - y[0], y[2] - 2 * y[1] + y[0]
    predicted = responses @ levels.to(r.dtype).double().numpy()
    scale = max(np.abs(predicted).max(initial=0.0), np.abs(effect).max(initial=0.0))
    tolerance = 1e-3 * scale + 1e-5 * np.abs(y).max(initial=0.0) + 1e-12
    if np.abs(bend).max(initial=0.0) > tolerance or np.abs(effect - predicted).max(initial=0.0) > tolerance:
        raise NotLinearPath(f"not a linear path from {runner.source} to {runner.target}: the linearised pass is not "
                            "affine (an operation Microscope does not recognise bends it)")
