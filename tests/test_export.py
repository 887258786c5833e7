"""Export to JSON / standalone .py / TorchScript, load back, and train with the result."""

from __future__ import annotations

import doctest
import inspect
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from loss_rl.errors import LossRLError, LossSpecError
from loss_rl.export import (
    EXTRA_FILE,
    LossSpec,
    export,
    load_loss,
    module_source,
    read_spec,
    spec_from_json,
    spec_from_text,
)
from loss_rl.export._torchscript import _generated_module
from loss_rl.expr import KNOWN_LOSSES, ExprLoss, TaskKind, known_loss

NAMES = sorted(KNOWN_LOSSES)


def _inputs(kind: TaskKind, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind is TaskKind.CLASSIFICATION:
        x = torch.randn(12, 5, generator=g, dtype=torch.float64) * 2
        x[0, 0], x[1, 1] = 100.0, -100.0  # saturated probabilities
        return x, torch.randint(0, 5, (12,), generator=g)
    x = torch.randn(12, generator=g, dtype=torch.float64) * 2
    return x, torch.randn(12, generator=g, dtype=torch.float64)


def _value_and_grad(criterion: torch.nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x = x.clone().requires_grad_(True)
    value = criterion(x, y)
    value.sum().backward()
    assert x.grad is not None
    return value.detach(), x.grad


def train(criterion: torch.nn.Module, classification: bool, steps: int = 20) -> list[float]:
    """Fit a tiny linear model on a random teacher with ``criterion``; return the first and last
    full-batch losses. Only torch is used: this source also runs in a fresh interpreter."""
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 8, generator=g)
    teacher = torch.randn(8, 3 if classification else 1, generator=g)
    if classification:
        targets = (inputs @ teacher).argmax(-1)
        model = torch.nn.Linear(8, 3)
    else:
        targets = (inputs @ teacher)[:, 0] + 0.1 * torch.randn(64, generator=g)
        model = torch.nn.Linear(8, 1)
    torch.manual_seed(0)
    model.reset_parameters()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)

    def full_batch_loss() -> float:
        with torch.no_grad():
            out = model(inputs)
            return float(criterion(out if classification else out[:, 0], targets))

    first = full_batch_loss()
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(inputs)
        loss = criterion(out if classification else out[:, 0], targets)
        loss.backward()
        optimizer.step()
    return [first, full_batch_loss()]


# The fresh interpreter imports only torch and the exported file (via importlib), computes values
# and gradients on the given inputs, scripts the module, and trains with it (the `train` above).
_FRESH_LOOP = """
cases = torch.load(sys.argv[1])
results = {}
for name, case in cases.items():
    found = importlib.util.spec_from_file_location("exported_" + name, case["file"])
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    criterion = module.DiscoveredLoss(reduction="none")
    x = case["x"].clone().requires_grad_(True)
    value = criterion(x, case["y"])
    value.sum().backward()
    torch.jit.script(module.DiscoveredLoss())
    losses = train(module.DiscoveredLoss(), case["kind"] == "classification")
    results[name] = {"value": value.detach(), "grad": x.grad, "losses": torch.tensor(losses)}
assert not any(m.startswith("loss_rl") for m in sys.modules), "the export imported loss_rl"
torch.save(results, sys.argv[2])
"""
_FRESH = (
    "import importlib.util\nimport sys\n\nimport torch\n\n\n"
    + textwrap.dedent(inspect.getsource(train))
    + _FRESH_LOOP
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Every known loss exported in every format."""
    root = tmp_path_factory.mktemp("exports")
    out: dict[str, dict[str, Path]] = {}
    for name in NAMES:
        meta = {"name": name, "title": KNOWN_LOSSES[name].title, "score": 0.5}
        out[name] = {
            fmt: export(known_loss(name), root / f"{name}.{ext}", fmt, metadata=meta)  # type: ignore[arg-type]
            for fmt, ext in (("json", "json"), ("py", "py"), ("torchscript", "pt"))
        }
    return out


@pytest.fixture(scope="module")
def fresh_results(
    exported: dict[str, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Tensor]]:
    """Run every exported .py in one fresh interpreter that knows only torch."""
    root = tmp_path_factory.mktemp("fresh")
    cases = {}
    for name in NAMES:
        kind = KNOWN_LOSSES[name].kind
        x, y = _inputs(kind)
        cases[name] = {"file": str(exported[name]["py"]), "x": x, "y": y, "kind": kind.value}
    torch.save(cases, root / "in.pt")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _FRESH, str(root / "in.pt"), str(root / "out.pt")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return torch.load(root / "out.pt")


@pytest.mark.parametrize("name", NAMES)
def test_json_round_trip_matches_library(name: str, exported: dict[str, dict[str, Path]]) -> None:
    path = exported[name]["json"]
    data = json.loads(path.read_text())
    assert data["schema"] == "loss_rl.loss" and data["schema_version"] == 1
    assert data["expression"] == str(known_loss(name))
    assert data["kind"] == KNOWN_LOSSES[name].kind.value
    assert data["metadata"]["name"] == name
    loaded = load_loss(path)
    assert isinstance(loaded, ExprLoss)
    assert loaded.expr == known_loss(name)
    kind = KNOWN_LOSSES[name].kind
    x, y = _inputs(kind)
    reference = ExprLoss(known_loss(name), kind)
    for got, want in zip(
        _value_and_grad(loaded, x, y), _value_and_grad(reference, x, y), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_torchscript_matches_library(name: str, exported: dict[str, dict[str, Path]]) -> None:
    path = exported[name]["torchscript"]
    loaded = load_loss(path)
    assert isinstance(loaded, torch.jit.ScriptModule)
    kind = KNOWN_LOSSES[name].kind
    reference = ExprLoss(known_loss(name), kind)
    for seed in (0, 1):  # TorchScript optimises on a later call: check that one too
        x, y = _inputs(kind, seed)
        for got, want in zip(
            _value_and_grad(loaded, x, y), _value_and_grad(reference, x, y), strict=True
        ):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    extra = {EXTRA_FILE: ""}
    torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra[EXTRA_FILE])["expression"] == str(known_loss(name))


@pytest.mark.parametrize("name", NAMES)
def test_standalone_py_in_fresh_interpreter_matches_library(
    name: str, fresh_results: dict[str, dict[str, Tensor]]
) -> None:
    kind = KNOWN_LOSSES[name].kind
    x, y = _inputs(kind)
    want_v, want_g = _value_and_grad(ExprLoss(known_loss(name), kind, "none"), x, y)
    got = fresh_results[name]
    torch.testing.assert_close(got["value"], want_v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got["grad"], want_g, rtol=1e-12, atol=1e-12)
    first, last = got["losses"].tolist()
    assert last < first, f"training with the exported {name} did not lower it: {first} -> {last}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fmt", ["json", "torchscript"])
def test_loaded_loss_trains_a_model(
    name: str, fmt: str, exported: dict[str, dict[str, Path]]
) -> None:
    criterion = load_loss(exported[name][fmt])
    first, last = train(criterion, KNOWN_LOSSES[name].kind is TaskKind.CLASSIFICATION)
    assert last < first


@pytest.mark.parametrize("name", ["focal", "huber"])
def test_standalone_py_reads_like_torch(name: str, exported: dict[str, dict[str, Path]]) -> None:
    source = exported[name]["py"].read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["import torch", "import torch.nn.functional as F"]
    for section in ("class DiscoveredLoss(torch.nn.Module):", ".. math::", "Args:", "Shape:"):
        assert section in source
    assert "eval(" not in source and "exec(" not in source
    # The docstring examples run.
    with _generated_module(source) as module:
        finder = doctest.DocTestFinder()
        runner = doctest.DocTestRunner()
        for test in finder.find(module.DiscoveredLoss, globs={"torch": torch, **vars(module)}):
            runner.run(test)
        assert runner.failures == 0 and runner.tries > 0


def test_reductions_and_soft_targets_in_exports(tmp_path: Path) -> None:
    expr = known_loss("label_smoothing")
    scripted = load_loss(export(expr, tmp_path / "ls.pt", "torchscript", reduction="sum"))
    x = torch.randn(6, 4, dtype=torch.float64)
    soft = torch.randn(6, 4, dtype=torch.float64).softmax(-1)
    hard = torch.randint(0, 4, (6,))
    for y in (soft, hard):
        want = ExprLoss(expr, reduction="sum")(x, y)
        torch.testing.assert_close(scripted(x, y), want)
    with _generated_module(module_source(LossSpec.of(expr))) as module:
        for reduction in ("mean", "sum", "none"):
            got = module.DiscoveredLoss(reduction)(x, soft)
            torch.testing.assert_close(got, ExprLoss(expr, reduction=reduction)(x, soft))
        with pytest.raises(ValueError, match="reduction"):
            module.DiscoveredLoss("avg")
    # A population of models [N, B, C] against one target [B].
    xn = torch.randn(3, 6, 4, dtype=torch.float64)
    torch.testing.assert_close(scripted(xn, hard), ExprLoss(expr, reduction="sum")(xn, hard))


def test_export_accepts_text_and_creates_folders(tmp_path: Path) -> None:
    path = export("-(1 - p_y)^2 * log_p_y", tmp_path / "a" / "b" / "loss.json")
    assert path.is_file()
    spec = read_spec(path)
    assert spec.expression == known_loss("focal")
    assert spec.kind is TaskKind.CLASSIFICATION and spec.reduction == "mean"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"expr": "p"}, "expression"),  # a per-class vector
        ({"expr": "p_y + residual"}, "leaves"),
        ({"expr": "residual^2", "kind": "classification"}, "kind"),
        ({"expr": "-log_p_y", "kind": "ranking"}, "kind"),
        ({"expr": "-log_p_y", "format": "onnx"}, "format"),
        ({"expr": "-log_p_y", "reduction": "avg"}, "reduction"),
        ({"expr": "-log_p_y", "metadata": {"score": float("nan")}}, "metadata"),
        ({"expr": "-log_p_y", "metadata": {1: "x"}}, "metadata"),
        ({"expr": "-log_p_y", "metadata": {"x": object()}}, "metadata"),
        ({"expr": "-log_p_y", "metadata": ["x"]}, "metadata"),
        ({"expr": "-log_p_y +"}, "expression"),
    ],
)
def test_export_rejects_bad_input(kwargs: dict[str, Any], field: str, tmp_path: Path) -> None:
    kwargs = {"path": tmp_path / "x.json", **kwargs}
    with pytest.raises(LossSpecError) as info:
        export(**kwargs)
    assert info.value.field == field
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------------------------------------
# Loading: every bad spec gives one clear LossSpecError naming the field.

_VALID = {
    "schema": "loss_rl.loss",
    "schema_version": 1,
    "expression": "-log_p_y",
    "kind": "classification",
    "reduction": "mean",
    "metadata": {"score": 0.5},
}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"schema": "torch.loss"}, "schema", "not a loss_rl loss spec"),
        ({"schema_version": 2}, "schema_version", "upgrade loss_rl"),
        ({"schema_version": 0}, "schema_version", "re-export"),
        ({"schema_version": "1"}, "schema_version", "cannot read"),
        ({"schema_version": True}, "schema_version", "cannot read"),
        ({"expression": "focal(p_y)"}, "expression", "unknown name 'focal'"),
        ({"expression": "-log_p_y +"}, "expression", "at position"),
        ({"expression": 3}, "expression", "write it as a string"),
        ({"expression": "p"}, "expression", "sum_c"),
        ({"expression": "residual^2"}, "kind", "regression leaves"),
        ({"kind": "ranking"}, "kind", "'classification', 'regression' or null"),
        ({"reduction": "avg"}, "reduction", "'mean', 'sum' or 'none'"),
        ({"metadata": [1]}, "metadata", "JSON object"),
        ({"extra": 1}, "extra", "put extra facts under 'metadata'"),
        ({"schema": None}, "schema", "expected 'loss_rl.loss'"),
    ],
)
def test_bad_specs_name_field_and_fix(change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(LossSpecError) as info:
        spec_from_json({**_VALID, **change}, "loss.json")
    assert info.value.field == field
    assert words in str(info.value)
    assert str(info.value).startswith("loss.json: ")


@pytest.mark.parametrize("missing", ["schema", "schema_version", "expression"])
def test_missing_field(missing: str) -> None:
    data = {k: v for k, v in _VALID.items() if k != missing}
    with pytest.raises(LossSpecError, match=f"field '{missing}' is missing") as info:
        spec_from_json(data)
    assert info.value.field == missing


def test_optional_fields_have_defaults() -> None:
    spec = spec_from_json({"schema": "loss_rl.loss", "schema_version": 1, "expression": "pred^2"})
    assert spec.kind is TaskKind.REGRESSION
    assert spec.reduction == "mean" and spec.metadata == {}
    assert spec_from_json({**_VALID, "kind": None}).kind is TaskKind.CLASSIFICATION


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "not valid JSON"),
        ("{", "line 1, column 2"),
        ("[]", "a loss spec is a JSON object"),
        ('{"schema": NaN}', "NaN is not valid JSON"),
        ('{"schema": 1e999}', "out of range"),
        ("[" * 100_000 + "]" * 100_000, "JSON"),
        ('{"schema": ' + "9" * 5000 + "}", "JSON"),
    ],
)
def test_bad_json_text(text: str, words: str) -> None:
    with pytest.raises(LossSpecError, match=words):
        spec_from_text(text)


def test_load_loss_file_errors(tmp_path: Path) -> None:
    with pytest.raises(LossSpecError, match="no loss file"):
        load_loss(tmp_path / "missing.json")
    py = export("-log_p_y", tmp_path / "loss.py", "py")
    with pytest.raises(LossSpecError, match="never executes code"):
        load_loss(py)
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LossSpecError, match="not UTF-8"):
        load_loss(tmp_path / "bin.json")
    with zipfile.ZipFile(tmp_path / "fake.pt", "w") as z:
        z.writestr("hello.txt", "not a model")
    with pytest.raises(LossSpecError, match="not a TorchScript module"):
        load_loss(tmp_path / "fake.pt")
    (tmp_path / "big.json").write_text(" " * (2 << 20))
    with pytest.raises(LossSpecError, match="larger than"):
        load_loss(tmp_path / "big.json")


# Fuzzing: arbitrary JSON, near-valid specs and raw text; only the project's typed errors escape.

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=6,
)
_scalar_json = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
_expressions = st.sampled_from(["-log_p_y", "p", "residual^2", "sum_c(t * log_p)", "p_y +", "x"])
_near_valid = st.fixed_dictionaries(
    {},
    optional={
        "schema": st.sampled_from(["loss_rl.loss", "loss_rl", ""]) | _scalar_json,
        "schema_version": st.sampled_from([1, 2, 0, -1, 1.0, True]) | _scalar_json,
        "expression": _expressions | st.text(max_size=30) | _scalar_json,
        "kind": st.sampled_from(["classification", "regression", None, "x"]) | _scalar_json,
        "reduction": st.sampled_from(["mean", "sum", "none", "avg"]) | _scalar_json,
        "metadata": st.dictionaries(st.text(max_size=5), _scalar_json, max_size=3) | _json,
        "extra": _scalar_json,
    },
)
_FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_typed_errors(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except LossRLError as err:
        assert str(err)


@_FUZZ
@given(_json)
def test_fuzz_arbitrary_json(data: Any) -> None:
    _only_typed_errors(spec_from_json, data)
    _only_typed_errors(spec_from_text, json.dumps(data))


@_FUZZ
@given(_near_valid)
def test_fuzz_near_valid_specs(data: dict[str, Any]) -> None:
    _only_typed_errors(spec_from_json, data)


@_FUZZ
@given(st.text(max_size=80) | st.sampled_from(['{"schema": ', "[", '{"a": 1}', "null", "1e400"]))
def test_fuzz_raw_text(text: str) -> None:
    _only_typed_errors(spec_from_text, text)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200) | _near_valid.map(lambda d: json.dumps(d).encode()))
def test_fuzz_files(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "loss.json"
    path.write_bytes(content)
    _only_typed_errors(load_loss, path)


def test_load_loss_runs_torchscript_only_from_a_pt_file(
    exported: dict[str, dict[str, Path]], tmp_path: Path
) -> None:
    # TorchScript is code: a zip passed under another name (an agent.zip, a renamed archive) is
    # refused before torch.jit.load sees it.
    name = next(iter(exported))
    script = exported[name]["torchscript"]
    disguised = tmp_path / "loss.zip"
    disguised.write_bytes(script.read_bytes())
    with pytest.raises(LossSpecError, match=r"runs TorchScript \(code\) only from a \.pt file"):
        load_loss(disguised)
    assert isinstance(load_loss(script), torch.jit.ScriptModule)
