"""TorchModel.fromModule / fromTorchScript / fromSpec, without Spark (issue 18:
scoring models trained elsewhere): what they build, and how they refuse bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import save_file

from sparkdl import ConfigError, CorruptModelError, ModelNotFoundError, TorchModel
from sparkdl.architecture import Architecture, weights_from_bytes
from sparkdl.nn import Dense, Input, Sequential
from sparkdl.worker.model_payload import InlineModel
from sparkdl.worker.score_task import _module, score_batch


def mlp(outputs: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, outputs))


def scripted(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(module)


def save_torchscript(module: torch.nn.Module, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted(module), str(path))
    return str(path)


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x).flatten(1)


def spec() -> Sequential:
    return Sequential([Input((4,)), Dense(8, activation="tanh"), Dense(3)])


def spec_weights(path) -> tuple[str, dict]:
    torch.manual_seed(1)
    state = {k: v.clone() for k, v in spec().build().state_dict().items()}
    save_file(state, str(path))
    return str(path), state


def run(model: TorchModel, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.getModel()(x).numpy()


# -- fromModule --------------------------------------------------------------------


def test_from_module_probes_output_and_infers_feature_shape():
    net = mlp()
    model = TorchModel.fromModule(net, task="multiclass", batchSize=16,
                                  predictionCol="label_hat")
    assert model.getFeatureShape() == [4]
    assert model.getOrDefault("outputShape") == [3]
    assert model.getTask() == "multiclass" and model.getBatchSize() == 16
    assert model.getPredictionCol() == "label_hat"
    assert model.history.epochs == [] and model._architecture.kind == "module"
    x = torch.randn(5, 4)
    np.testing.assert_allclose(run(model, x), net(x).detach().numpy(), rtol=1e-6)


def test_from_module_leaves_the_module_as_it_was():
    net = mlp().train()
    TorchModel.fromModule(net)
    assert net.training


def test_from_module_takes_feature_shape_and_regression_outputs():
    model = TorchModel.fromModule(TwoInputs(), featureShape=[1, 5, 5], task="regression")
    assert model.getOrDefault("outputShape") == [18]
    assert not model._scalar_prediction()


def test_from_module_feature_cols_give_the_shape():
    model = TorchModel.fromModule(mlp(1), featuresCols=["a", "b", "c", "d"], task="binary")
    assert model.getFeatureShape() == [4] and model.getFeatureColumns() == ["a", "b", "c", "d"]
    assert model._scalar_prediction()


def test_from_module_scripted_module_is_kept_as_torchscript():
    net = mlp()
    model = TorchModel.fromModule(scripted(net), featureShape=[4])
    assert model._architecture.kind == "torchscript"
    x = torch.randn(3, 4)
    np.testing.assert_allclose(run(model, x), net(x).detach().numpy(), rtol=1e-6)


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"task must be one of \['multiclass', 'binary', "
                                          r"'regression'\]. Received: task='classify'"):
        TorchModel.fromModule(mlp(), task="classify")


def test_feature_shape_is_required_when_it_cannot_be_inferred():
    with pytest.raises(ConfigError, match="featureShape is required"):
        TorchModel.fromModule(TwoInputs(), task="regression")


def test_module_that_fails_on_the_shape():
    with pytest.raises(ConfigError, match=r"cannot take features of shape \[5\]"):
        TorchModel.fromModule(mlp(), featureShape=[5])


def test_multiclass_needs_batch_by_classes():
    with pytest.raises(ConfigError, match=r"multiclass model must output \(batch, classes\); "
                                          r"this model outputs \(batch, 2, 3, 3\)"):
        TorchModel.fromModule(TwoInputs().conv, featureShape=[1, 5, 5])


@pytest.mark.parametrize("kwargs, match", [
    ({"batchSize": 0}, "batchSize must be >= 1"),
    ({"featureShape": [0, 3]}, "featureShape does not fit its Param"),
    ({"featuresCols": "a"}, "featuresCols does not fit its Param"),
])
def test_bad_param_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TorchModel.fromModule(mlp(), **kwargs)


@pytest.mark.parametrize("bad, match", [
    (spec(), "use TorchModel.fromSpec"),
    (mlp, "Received: module=function"),
])
def test_from_module_refuses_what_is_no_module(bad, match):
    with pytest.raises(ConfigError, match=match):
        TorchModel.fromModule(bad)


# -- fromTorchScript -----------------------------------------------------------------


def test_from_torchscript_keeps_the_archive(tmp_path):
    net = mlp()
    path = save_torchscript(net, tmp_path / "net.pt")
    model = TorchModel.fromTorchScript(path, featureShape=[4], probabilityCol="")
    assert model._architecture == Architecture("torchscript", open(path, "rb").read())
    assert set(weights_from_bytes(model._weights)) == set(net.state_dict())
    assert model.getOrDefault("outputShape") == [3] and model.getProbabilityCol() == ""
    x = torch.randn(3, 4)
    np.testing.assert_allclose(run(model, x), net(x).detach().numpy(), rtol=1e-6)
    same = TorchModel.fromTorchScript(f"file:{path}", featureShape=[4])
    assert same._weights == model._weights


def test_from_torchscript_needs_a_feature_shape(tmp_path):
    path = save_torchscript(mlp(), tmp_path / "net.pt")
    with pytest.raises(ConfigError, match="featureShape is required"):
        TorchModel.fromTorchScript(path)


def test_from_torchscript_missing_and_damaged_files(tmp_path):
    with pytest.raises(ModelNotFoundError, match=f"No file at {tmp_path}/no.pt"):
        TorchModel.fromTorchScript(str(tmp_path / "no.pt"), featureShape=[4])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip archive")
    with pytest.raises(CorruptModelError, match=f"{junk} is not a TorchScript archive"):
        TorchModel.fromTorchScript(str(junk), featureShape=[4])
    with pytest.raises(ConfigError, match="is a directory"):
        TorchModel.fromTorchScript(str(tmp_path), featureShape=[4])


def test_torchscript_architecture_shapes_and_weights(tmp_path):
    net = mlp()
    arch = Architecture.of(scripted(net))
    assert arch.kind == "torchscript"
    assert arch.expected_shapes() == {k: tuple(v.shape) for k, v in net.state_dict().items()}
    zeros = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    assert torch.count_nonzero(arch.build(zeros)(torch.randn(2, 4))) == 0
    with pytest.raises(CorruptModelError, match="does not fit the.*torchscript"):
        arch.build({"0.weight": torch.zeros(8, 4)})


# -- fromSpec ------------------------------------------------------------------------


def test_from_spec_with_network_json_or_file(tmp_path):
    weights, state = spec_weights(tmp_path / "w.safetensors")
    reference = spec().build()
    reference.load_state_dict(state)
    json_file = tmp_path / "net.json"
    json_file.write_text(spec().to_json())
    x = torch.randn(3, 4)
    for network in (spec(), spec().to_json(), str(json_file)):
        model = TorchModel.fromSpec(network, weights, task="multiclass")
        assert model._architecture.kind == "spec" and model.getFeatureShape() == [4]
        assert model._weights == open(weights, "rb").read()
        np.testing.assert_allclose(run(model, x), reference(x).detach().numpy(), rtol=1e-6)


def test_from_spec_names_the_tensor_that_does_not_fit(tmp_path):
    _, state = spec_weights(tmp_path / "w.safetensors")
    state["1.weight"] = torch.zeros(3, 7)
    del state["1.bias"]
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CorruptModelError, match=r"bad.safetensors does not fit the network: "
                                                r"1.weight has shape \[3, 7\], the network "
                                                r"needs \[3, 8\]; missing 1.bias\[3\]"):
        TorchModel.fromSpec(spec(), str(tmp_path / "bad.safetensors"))


def test_from_spec_refuses_bad_inputs(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    with pytest.raises(CorruptModelError, match="junk.safetensors is not a valid safetensors"):
        TorchModel.fromSpec(spec(), str(junk))
    with pytest.raises(ModelNotFoundError, match="weightsPath must name a safetensors file"):
        TorchModel.fromSpec(spec(), str(tmp_path / "none.safetensors"))
    with pytest.raises(ConfigError, match="network spec must be JSON"):
        TorchModel.fromSpec("{not json", str(junk))
    with pytest.raises(ConfigError, match="Received: network=int"):
        TorchModel.fromSpec(3, str(junk))


# -- the executors' code path --------------------------------------------------------


@pytest.mark.parametrize("make", ["module", "torchscript"])
def test_scoring_task_builds_and_scores_it(tmp_path, make):
    from sparkdl.worker import score_task

    net = mlp()
    model = (TorchModel.fromModule(net) if make == "module"
             else TorchModel.fromTorchScript(save_torchscript(net, tmp_path / "n.pt"),
                                             featureShape=[4]))
    spec = model._score_spec(("features",))
    arch = model._architecture
    payload = InlineModel(arch.kind, arch.payload, model._weights)
    try:
        module = _module(spec, payload, "cpu")
        x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
        batch = pa.RecordBatch.from_arrays(
            [pa.array(list(map(list, x.astype(np.float64))))], names=["features"])
        cols = score_batch(spec, module, "cpu", batch)
    finally:
        score_task._MODELS.pop(spec.model_key, None)
    expected = net(torch.from_numpy(x)).detach().numpy().argmax(axis=1)
    assert cols["prediction"].to_pylist() == expected.astype(float).tolist()
    assert set(cols) == {"prediction", "probability", "rawPrediction"}
