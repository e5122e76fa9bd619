"""Class votes (precompute/linear_paths.py `uniform_responses`, stored by the classes technique): hand-set head
weights come back as the votes, with their signs, one and two layers before the head; a folded batch norm
scales them; the classifier is found inside the model or is the model itself; a gated path is refused with its
reason; the classes predicted on a unit's top images are the model's; and it all reaches `unit --json`."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from precompute.linear_paths import NoClassifier, NotLinearPath, classifier_output, strongest, uniform_responses

pytestmark = pytest.mark.integration  # runs hand-built nets, the pipeline and the bundled model

HEAD = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0], [0.25, 4.0, -2.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


def planted() -> nn.Sequential:
    """conv (layer "0", 4 units) -> ReLU -> conv ("2", 3 units) -> batch norm ("3") -> ReLU -> global average
    pool -> Linear ("7", 5 classes, hand-set). The convolutions are unpadded, so a uniform map stays uniform:
    the votes two layers before the head are exactly the head's weights composed with the kernels' sums."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5)).double()
    with torch.no_grad():
        model[3].weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        model[3].bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
        model[3].running_mean.copy_(torch.tensor([0.5, 1.0, -1.0]))
        model[3].running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
        model[7].weight.copy_(HEAD)
        model[7].bias.fill_(7.0)  # a bias is no vote
    return model.eval()


def bn_scale(bn: nn.BatchNorm2d) -> np.ndarray:
    return (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()


def test_hand_set_head_weights_are_the_votes_one_and_two_layers_before_the_head():
    model = planted()
    head = HEAD.double().numpy()
    assert classifier_output(model, 16) == "7"
    np.testing.assert_allclose(uniform_responses(model, "3", "7", 16), head, rtol=0, atol=1e-12)
    one = uniform_responses(model, "2", "7", 16)  # before the batch norm: its scale folds in
    np.testing.assert_allclose(one, head * bn_scale(model[3]), rtol=0, atol=1e-12)
    sums = model[2].weight.detach().numpy().sum(axis=(2, 3))  # (3, 4): each kernel's sum
    two = uniform_responses(model, "0", "7", 16)
    np.testing.assert_allclose(two, (head * bn_scale(model[3])) @ sums, rtol=0, atol=1e-12)
    # Unit 1 of layer 3 raises class 2 (4.0) and class 4 (1.0), lowers class 0 (-1.0), leaves 1 and 3 alone.
    up, down = strongest(uniform_responses(model, "3", "7", 16)[:, 1], 10)
    assert up.tolist() == [2, 4] and down.tolist() == [0]
    np.testing.assert_array_equal(uniform_responses(model, "7", "7", 16, units=[1, 4]), np.eye(5)[:, [1, 4]])
    np.testing.assert_allclose(uniform_responses(model, "0", "7", 16, units=[3, 1]), two[:, [3, 1]], atol=1e-12)


class FunctionalHead(nn.Module):
    """A head whose last step is a function, not a module: the model itself is the classifier."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 3, 3)
        self.head = nn.Conv2d(3, 5, 1)
        with torch.no_grad():
            self.head.weight.copy_(HEAD[:, :, None, None])

    def forward(self, x):
        return self.head(nn.functional.adaptive_avg_pool2d(torch.relu(self.body(x)), 1)).flatten(1)


class Segmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x):
        return self.conv(x)


def test_the_classifier_is_the_module_whose_output_the_model_returns_else_the_model():
    model = FunctionalHead().eval()
    assert classifier_output(model, 16) == ""
    np.testing.assert_allclose(uniform_responses(model, "body", "", 16), HEAD.numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(NoClassifier, match=r"^the model's output is \(1, 2, 14, 14\), not a \(batch, classes\)"):
        classifier_output(Segmenter().eval(), 16)


# Squeeze-excite-like gating (x * sigmoid(...)) between the stem and the body, then a 2-class head with hand-set
# weights and no labels: built in this process, and named as a `file.py:build` factory on the command line.
TWO_CLASS_FACTORY = '''
import torch
from torch import nn


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3)
        self.se = nn.Conv2d(4, 4, 1)
        self.body = nn.Conv2d(4, 3, 3)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0]]))

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x * torch.sigmoid(self.se(x.mean((2, 3), keepdim=True)))
        return self.fc(torch.relu(self.body(x)).mean((2, 3)))


def build():
    return Gated()
'''


def gated() -> nn.Module:
    namespace: dict = {}
    exec(TWO_CLASS_FACTORY, namespace)  # the factory file's own code, so that both tests use one model
    return namespace["build"]().eval()


def test_a_gated_path_is_not_linear_and_says_why():
    model = gated()
    assert classifier_output(model, 16) == "fc"
    with pytest.raises(NotLinearPath, match=r"^not a linear path: sigmoid in the model bends the activations"):
        uniform_responses(model, "stem", "fc", 16)
    np.testing.assert_allclose(uniform_responses(model, "body", "fc", 16), model.fc.weight.detach().numpy(),
                               rtol=1e-6, atol=1e-6)  # after the gate, the path is linear again




def test_a_two_class_factory_without_labels_reaches_unit_json_with_its_votes_paths_and_provenance(tmp_path, capsys):
    from precompute.cli import main

    factory = tmp_path / "two_class.py"
    factory.write_text(TWO_CLASS_FACTORY)
    store = tmp_path / "s.duckdb"
    assert main(["precompute", f"{factory}:build", "--store", str(store), "--techniques", "classes",
                 "--max-images", "24", "--k", "8", "--input-size", "32", "--name", "two"]) == 0
    capsys.readouterr()

    def record(layer: str, unit: int) -> dict:
        assert main(["unit", "two", layer, str(unit), "--json", "--store", str(store)]) == 0
        return json.loads(capsys.readouterr().out)

    body = [record("body", u)["classes"] for u in range(3)]
    assert [[(v["index"], v["label"], v["weight"]) for v in b["up"]] for b in body] == [
        [(0, None, pytest.approx(2.0))], [], [(1, None, pytest.approx(1.0)), (0, None, pytest.approx(0.5))]]
    assert [[(v["index"], v["weight"]) for v in b["down"]] for b in body] == [
        [(1, pytest.approx(-3.0))], [(0, pytest.approx(-1.0))], []]
    for b in body:
        # Out of k = 8: the 24 crops are all of one photo, and crops showing one place of it count once.
        assert "status" not in b and 1 <= sum(p["count"] for p in b["predicted"]) <= 8
        assert all(set(p) == {"index", "label", "count"} and p["index"] in (0, 1) for p in b["predicted"])
    assert record("fc", 1)["classes"]["up"] == [{"index": 1, "label": None, "weight": 1.0}]  # the logit itself
    stem = record("stem", 0)
    assert stem["classes"]["status"] == "not_linear" and stem["classes"]["up"] == []
    assert "sigmoid in the model bends the activations" in stem["classes"]["message"]
    assert len(stem["classes"]["predicted"]) >= 1  # predictions need no linear path
    assert [r["technique"] for r in stem["provenance"]] == ["classes"]


COLOUR_FACTORY = '''
import torch
from torch import nn


def build():
    """Layer "0" copies the image's channels; the head predicts the channel with the highest mean."""
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3)[:, :, None, None])
        model[0].bias.zero_()
        model[3].weight.copy_(torch.eye(3))
        model[3].bias.zero_()
    return model
'''


def test_predicted_classes_of_top_images_are_the_models_predictions(tmp_path):
    from precompute.dataset_pass import normalise
    from precompute.datasets import open_dataset
    from precompute.models import IMAGENET_MEAN, IMAGENET_STD, Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request
    from store.queries import Store

    factory = tmp_path / "colour.py"
    factory.write_text(COLOUR_FACTORY)
    store = tmp_path / "s.duckdb"
    precompute(Request(model=f"{factory}:build", store=store, techniques="dataset,classes", max_images=48, k=8,
                       progress=False, overrides=Overrides(name="colour", input_size=32)))
    dataset = open_dataset("sample")
    reader = Store(store)

    def predicted(image_id: str) -> int:
        x = normalise([dataset.load(int(image_id.rsplit(":", 1)[1]), 32)], IMAGENET_MEAN, IMAGENET_STD)
        return int(x.mean(dim=(2, 3))[0].argmax())

    for unit in range(3):
        tops = [r["image_id"] for r in reader.unit_examples("colour", "0", unit) if r["kind"] == "top"]
        expected = Counter(predicted(i) for i in tops)
        got = {p["index"]: p["count"] for p in reader.classes_record("colour", "0", unit)["predicted"]}
        # The top images that the dataset technique keeps (k = 8 at most, fewer where the 48 crops of one photo
        # repeat a place), and the predictions are counted over those same images.
        assert got == dict(expected) and 1 <= sum(got.values()) == len(tops) <= 8
    # The images that excite the red channel most are mostly predicted red (class 0): a check on the check.
    assert reader.classes_record("colour", "0", 0)["predicted"][0]["index"] == 0


def test_the_pass_keeps_predictions_only_when_asked_and_changes_nothing_else():
    from precompute.dataset_pass import dataset_pass, normalise
    from precompute.datasets import open_dataset
    from precompute.layers import Geometry
    from precompute.models import IMAGENET_MEAN, IMAGENET_STD, Layer, ModelSpec

    model = planted().float()
    spec = ModelSpec("p", "p", "factory", 32, IMAGENET_MEAN, IMAGENET_STD, layers=(Layer("0", 4),))
    dataset = open_dataset("sample")
    dataset.items = dataset.items[:20]
    geo = {"0": Geometry(30, 30, 3)}
    plain = dataset_pass(model, spec, ["0"], geo, dataset, "cpu", k=4, reservoir=8, seed=0, batch_size=8,
                         progress=False)["0"]
    asked = dataset_pass(model, spec, ["0"], geo, dataset, "cpu", k=4, reservoir=8, seed=0, batch_size=8,
                         progress=False, predictions=True)["0"]
    assert plain.top.pred is None and plain.classes is None and asked.classes == 5
    for a, b in ((plain.top, asked.top), (plain.bottom, asked.bottom)):
        torch.testing.assert_close(a.value, b.value)
        assert torch.equal(a.index, b.index) and torch.equal(a.pos, b.pos)
    x = normalise([dataset.load(i, 32) for i in range(20)], IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        labels = model(x).argmax(1)
    assert torch.equal(asked.top.pred, labels[asked.top.index])


def test_bundled_head_votes_are_the_classifier_weights_times_the_folded_batch_norm():
    """conv_head -> bn2 -> ReLU6 -> global average pool -> classifier: the votes are exact."""
    from precompute.models import build, resolve

    spec = resolve("efficientnet_lite0.bundled")
    model = build(spec, pretrained=True, device=torch.device("cpu"))
    assert classifier_output(model, spec.input_size) == "classifier"
    units = list(range(0, 1280, 37))
    votes = uniform_responses(model, "conv_head", "classifier", spec.input_size, units=units)
    expected = model.classifier.weight.detach().numpy()[:, units] * bn_scale(model.bn2)[units]
    np.testing.assert_allclose(votes, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
