"""Bad input on the command line: one clear error (exit code 2) before any work, never a traceback.

One test per defect found in review (expressions read as paths, outputs and options checked only
after the work, uncapped budgets and models, a search that stopped short without a word), then a
hypothesis fuzz of every subcommand with small alphabets of good and bad values.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from loss_rl._refine import MAX_VERIFY_SEEDS, check_verify_seeds, refine
from loss_rl._search import new_run
from loss_rl.agents import SearchState
from loss_rl.cli import app
from loss_rl.cli._choices import MAX_VERIFY_SEEDS as CLI_MAX_VERIFY_SEEDS
from loss_rl.cli._runs import EXIT_STOPPED_SHORT
from loss_rl.errors import ConfigError
from loss_rl.export import export, read_spec
from loss_rl.expr import known_loss, parse
from loss_rl.presets import check_budget, load_env_preset
from loss_rl.presets._env import MAX_BUDGET
from loss_rl.tasks import DatasetConfig, ModelConfig, TaskConfig, build_model, load_raw
from loss_rl.tasks._config import DATASET_SHAPES, MAX_MODEL_PARAMS

runner = CliRunner()
SEARCH_RUN = "loss_rl._search._runner.Search.run"
"""The search loop: forbidden where an input error must come first (a regression fails fast)."""
GCE = "(1 - p_y^0.7) / 0.7"
LONG = " + ".join(["0.5 * (1 - p_y^0.7) / 0.7"] * 12)  # 300+ characters, with "/"
TINY = yaml.safe_load((Path(__file__).parents[1] / "envs" / "tiny.yaml").read_text())


@pytest.fixture(autouse=True)
def _in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # One process: worker start-up would dominate these tiny trainings.
    monkeypatch.setenv("LOSS_RL_WORKERS", "0")


def _fails_cleanly(result: Result, *words: str) -> None:
    """Exit code 2, one ``Error:`` message naming ``words``, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output


def _no_work(monkeypatch: pytest.MonkeyPatch, *targets: str) -> None:
    """Make the named functions fail the test if called: the error must come before them."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("work started before the input was checked")

    for target in targets:
        monkeypatch.setattr(target, forbidden)


def _env_file(path: Path, **changes: Any) -> Path:
    """The tiny preset with ``changes`` merged into its sections, written to ``path``."""
    data = json.loads(json.dumps(TINY))
    for section, values in changes.items():
        if isinstance(values, dict):
            data[section] = {**data.get(section, {}), **values}
        else:
            data[section] = values
    path.write_text(yaml.safe_dump(data))
    return path


# --- losses on the command line --------------------------------------------------------------


def test_an_expression_with_a_slash_is_parsed_not_looked_up(tmp_path: Path) -> None:
    result = runner.invoke(app, ["show", GCE])
    assert result.exit_code == 0, result.output
    assert parse(GCE).key in result.stdout
    out = tmp_path / "gce.json"
    result = runner.invoke(app, ["export", GCE, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert read_spec(out).expression == parse(GCE)


def test_expressions_longer_than_a_file_name_work_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(LONG) > 255
    result = runner.invoke(app, ["show", LONG])
    assert result.exit_code == 0, result.output
    out = tmp_path / "long.json"
    result = runner.invoke(app, ["export", LONG, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert read_spec(out).expression == parse(LONG)
    # evaluate and refine read the loss first; their next check then fails, without OSError.
    _no_work(monkeypatch, "loss_rl.verify.verify", "loss_rl._refine._symbolic.meta_optimize")
    result = runner.invoke(app, ["evaluate", LONG, "--env", "nope"])
    _fails_cleanly(result, "unknown env preset 'nope'")
    result = runner.invoke(app, ["refine", LONG, "--env", "nope", "--out", str(tmp_path)])
    _fails_cleanly(result, "unknown env preset 'nope'")
    # The parser's own size limit applies on the command line.
    result = runner.invoke(app, ["show", "p_y + " * 2000 + "p_y"])
    _fails_cleanly(result, "longer than 10000 characters")


@pytest.mark.parametrize("command", ["show", "export", "evaluate", "refine"])
def test_an_empty_loss_is_a_clear_error(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # `show ""` used to read the current folder
    extra = {"export": ["--out", "x.json"], "evaluate": ["--env", "tiny"]}.get(command, [])
    result = runner.invoke(app, [command, "", *extra])
    _fails_cleanly(result, "the loss is empty")
    assert list(tmp_path.iterdir()) == []


# --- outputs that cannot be written fail before the work -------------------------------------


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A regular file: nothing can be created under it."""
    f = tmp_path / "blocked"
    f.write_text("a file, not a folder")
    return f


def test_evaluate_csv_unwritable_fails_before_training(
    blocked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch, "loss_rl.verify.verify")
    result = runner.invoke(
        app, ["evaluate", "gce", "--env", "tiny", "--seeds", "2", "--csv", str(blocked / "t.csv")]
    )
    _fails_cleanly(result, "--csv", "is a file")


def test_meta_train_out_unwritable_fails_before_training(
    blocked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch, "loss_rl._refine._neural.meta_optimize")
    result = runner.invoke(
        app, ["meta-train", "--env", "tiny", "--meta-steps", "1", "--out", str(blocked / "m")]
    )
    _fails_cleanly(result, "out", "is a file")


def test_search_out_unwritable_creates_nothing(
    blocked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch, SEARCH_RUN)
    result = runner.invoke(
        app,
        [
            "search",
            "--env",
            "tiny",
            "--agent",
            "random",
            "--budget",
            "1",
            "--out",
            str(blocked / "runs"),
        ],
    )
    _fails_cleanly(result, "out", "is a file")
    assert blocked.is_file()


def test_plot_in_a_format_matplotlib_cannot_write(tmp_path: Path) -> None:
    result = runner.invoke(app, ["show", "gce", "--plot", str(tmp_path / "plot.json")])
    _fails_cleanly(result, "--plot", "png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["export", "show"])
def test_export_and_plot_paths_unwritable(command: str, blocked: Path, tmp_path: Path) -> None:
    option = "--out" if command == "export" else "--plot"
    for bad in (blocked / "x.out", tmp_path):  # under a file; an existing folder
        result = runner.invoke(app, [command, "gce", option, str(bad)])
        _fails_cleanly(result, option)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked"]


# --- options checked before the run folder ---------------------------------------------------


@pytest.mark.parametrize("agent", ["random", "maskable_ppo"])
def test_negative_seed_is_refused_before_the_run_folder(
    agent: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch, SEARCH_RUN)
    out = tmp_path / "runs"
    result = runner.invoke(
        app,
        [
            "search",
            "--env",
            "tiny",
            "--agent",
            agent,
            "--budget",
            "16",
            "--seed",
            "-1",
            "--out",
            str(out),
        ],
    )
    _fails_cleanly(result, "--seed")
    assert not out.exists()
    # The library refuses it too, before anything is written.
    for seed in (-1, 2**32):
        with pytest.raises(ConfigError, match="seed"):
            new_run(
                "tiny",
                agent,
                budget=16,
                seed=seed,
                out=out,
                name=None,
                init_agent=None,
                train=True,
                tensorboard=False,
                executor=None,
                ray_address=None,
            )
    assert not out.exists()


@pytest.mark.parametrize("option", ["--env", "--agent"])
def test_non_utf8_yaml_preset_is_a_clear_error(
    option: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch, SEARCH_RUN)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"description: \xff\xfe not utf-8\n")
    args = ["search", "--env", "tiny", "--agent", "random", option, str(bad)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "runs")])
    _fails_cleanly(result, "bad.yaml", "UTF-8")
    assert not (tmp_path / "runs").exists()


def test_preset_names_too_long_for_a_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch, SEARCH_RUN)
    result = runner.invoke(app, ["search", "--env", "x" * 300, "--out", str(tmp_path / "runs")])
    _fails_cleanly(result, "unknown env preset")
    assert not (tmp_path / "runs").exists()


# --- refine: seeds and output checked first, destination explicit ----------------------------


@pytest.fixture
def gce_spec(tmp_path: Path) -> Path:
    return export(known_loss("gce", q=0.5), tmp_path / "gce.json")


@pytest.mark.parametrize(("seeds", "words"), [("1", "2 or more"), ("0", "--no-verify")])
def test_refine_seeds_are_checked_before_refining(
    seeds: str, words: str, gce_spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch, "loss_rl._refine._symbolic.meta_optimize")
    result = runner.invoke(app, ["refine", str(gce_spec), "--env", "tiny", "--seeds", seeds])
    _fails_cleanly(result, "--seeds", words)
    with pytest.raises(ConfigError, match="verify_seeds"):
        refine(gce_spec, "tiny", meta_steps=1, verify_seeds=1)
    assert not (gce_spec.parent / "gce.refined.json").exists()


@pytest.mark.parametrize("command", ["evaluate", "refine", "meta-train"])
def test_huge_seed_counts_are_refused_not_listed(
    command: str, gce_spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The verification built its list of fresh seeds first: 2**32 of them ran out of memory.
    _no_work(
        monkeypatch,
        "loss_rl.verify.verify",
        "loss_rl._refine._symbolic.meta_optimize",
        "loss_rl._refine._neural.meta_optimize",
    )
    source = [] if command == "meta-train" else [str(gce_spec)]
    result = runner.invoke(app, [command, *source, "--env", "tiny", "--seeds", str(2**32)])
    _fails_cleanly(result, "--seeds", f"{MAX_VERIFY_SEEDS}")
    with pytest.raises(ConfigError, match="verify_seeds"):
        check_verify_seeds(MAX_VERIFY_SEEDS + 1)
    assert MAX_VERIFY_SEEDS == CLI_MAX_VERIFY_SEEDS


def test_refine_writes_into_out_and_says_where_first(
    gce_spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blocked: Path
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "refined"
    args = ["refine", "gce", "--env", "tiny", "--meta-steps", "1", "--inner-steps", "4"]
    result = runner.invoke(app, [*args, "--no-verify", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "loss.refined.json").is_file()
    assert list(cwd.iterdir()) == []
    said = result.stdout.replace("\n", "")
    assert f"goes to {out / 'loss.refined.json'}" in said
    assert said.index("goes to") < said.index("wrote json")
    assert "Not verified" in said
    # An unwritable destination is refused before the work.
    _no_work(monkeypatch, "loss_rl._refine._symbolic.meta_optimize")
    result = runner.invoke(app, [*args, "--no-verify", "--out", str(blocked / "r")])
    _fails_cleanly(result, "out", "is a file")


# --- budgets and model sizes are capped ------------------------------------------------------


def test_budget_above_the_cap_needs_no_cap(
    tmp_path: Path, blocked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch, SEARCH_RUN)
    out = tmp_path / "runs"
    over = str(MAX_BUDGET + 1)
    result = runner.invoke(
        app, ["search", "--env", "tiny", "--agent", "random", "--budget", over, "--out", str(out)]
    )
    _fails_cleanly(result, "budget", "--no-cap", f"{MAX_BUDGET:,}")
    assert not out.exists()
    # --no-cap lifts it: the next check (the output folder) is the one that fails now.
    result = runner.invoke(
        app,
        [
            "search",
            "--env",
            "tiny",
            "--agent",
            "random",
            "--budget",
            over,
            "--no-cap",
            "--out",
            str(blocked / "x"),
        ],
    )
    _fails_cleanly(result, "out")
    assert "--no-cap" not in result.output
    with pytest.raises(ConfigError, match="cap"):
        check_budget(10**23, "budget")
    check_budget(10**23, "budget", cap=False)
    with pytest.raises(ConfigError, match=r"env\.budget"):
        load_env_preset(_env_file(tmp_path / "huge.yaml", budget=10**23))


class _Stats:
    def __init__(self, proposed: int, trained: int) -> None:
        self.proposed, self.trained = proposed, trained


class _Evaluator:
    def __init__(self, proposed: int, trained: int) -> None:
        self.stats = _Stats(proposed, trained)


def test_search_state_says_why_it_stopped() -> None:
    spent = SearchState(_Evaluator(50, 10), budget=10)  # type: ignore[arg-type]
    assert spent.done and spent.stop_reason is None
    short = SearchState(_Evaluator(100, 3), budget=10)  # type: ignore[arg-type]
    assert short.done
    assert short.stop_reason is not None
    assert short.stop_reason.startswith("proposal cap: 100 proposals, only 3 new losses")
    steps = SearchState(_Evaluator(2, 1), budget=10, max_env_steps=5)  # type: ignore[arg-type]
    steps.env_steps = 5
    assert steps.stop_reason is not None and steps.stop_reason.startswith("env-step cap")
    running = SearchState(_Evaluator(2, 1), budget=10)  # type: ignore[arg-type]
    assert not running.done and running.stop_reason is None


def test_search_that_stops_short_says_why_and_exits_3(tmp_path: Path) -> None:
    # One edit from CE, trees of at most 3 nodes: about a dozen losses (and the descriptor's two
    # landmarks), fewer than the budget.
    env = _env_file(tmp_path / "small.yaml", space={"max_steps": 1, "max_size": 3})
    result = runner.invoke(
        app,
        [
            "search",
            "--env",
            str(env),
            "--agent",
            "random",
            "--budget",
            "30",
            "--out",
            str(tmp_path),
            "--name",
            "r",
        ],
    )
    assert result.exit_code == EXIT_STOPPED_SHORT == 3, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert re.match(r"proposal cap: \d+ proposals, only \d+ new losses", summary["stopped"])
    assert "Stopped before the budget: proposal cap" in result.stdout.replace("\n", "")
    assert (tmp_path / "r" / "best" / "loss.json").is_file()  # the work is kept all the same


def test_model_size_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_work(monkeypatch, SEARCH_RUN)
    env = _env_file(tmp_path / "big.yaml", task={**TINY["task"], "model": {"widths": [10**8]}})
    out = tmp_path / "runs"
    result = runner.invoke(
        app, ["search", "--env", str(env), "--agent", "random", "--budget", "1", "--out", str(out)]
    )
    _fails_cleanly(result, "task.model.widths", f"{MAX_MODEL_PARAMS:,}")
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"task\.model\.channels"):
        TaskConfig.from_dict(
            {"model": {"kind": "cnn1d", "channels": [4096, 4096], "kernel_sizes": [5, 3]}}
        )
    TaskConfig.from_dict({"model": {"widths": [512, 512]}})  # ~300k parameters: allowed


@pytest.mark.parametrize("name", sorted(DATASET_SHAPES))
def test_dataset_shapes_and_parameter_counts_match_the_real_models(name: str) -> None:
    if name == "mnist1d":
        pytest.importorskip("mnist1d")
    cfg = DatasetConfig(name=name)
    raw = load_raw(cfg)
    outputs = raw.num_classes if raw.num_classes is not None else 1
    assert cfg.shape() == (raw.x.shape[1], outputs)
    specs = [ModelConfig(), ModelConfig(kind="linear"), ModelConfig(widths=(7, 5))]
    if name == "mnist1d":
        specs.append(ModelConfig(kind="cnn1d"))
    for spec in specs:
        model = build_model(spec, *cfg.shape(), seed=0)
        assert spec.num_parameters(*cfg.shape()) == sum(p.numel() for p in model.parameters())


# --- fuzz: every subcommand, small alphabets of good and bad values --------------------------


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Files the fuzz alphabets point at; the fuzz runs with this as the current folder."""
    d = tmp_path_factory.mktemp("fuzz")
    (d / "blocked").write_text("a file")
    (d / "bad.yaml").write_bytes(b"task: \xff\n")
    _env_file(d / "big.yaml", task={**TINY["task"], "model": {"widths": [10**8]}})
    # The good env of the fuzz: the tiny task with 3 search and 5 verification steps.
    training = {**TINY["task"]["training"], "steps": 3, "full_steps": 5}
    _env_file(d / "fast.yaml", task={**TINY["task"], "training": training})
    export(known_loss("gce", q=0.5), d / "gce.json")
    (d / "neural.json").write_text('{"schema": "loss_rl.neural_loss"}')
    old = Path.cwd()
    os.chdir(d)
    yield d
    os.chdir(old)


_LOSSES = ["gce", GCE, "-log_p_y", "", "p_y +", LONG, "missing.json", "gce.json", "neural.json"]
_LOSSES += ["blocked", ".", "residual^2", "a/b"]
_ENVS = ["fast.yaml", "nope", "", "bad.yaml", "big.yaml", "x" * 300]
_PATHS = ["out/x.json", "blocked/x", "blocked", ".", "", "y" * 300]
_INTS = ["-1", "0", "1", "2", "x", "1e23", "4294967296"]
_STEPS = ["-1", "0", "1"]
_FOLDERS = ["nope", "", ".", "blocked"]


def _spec(prefix: str = "", args: list[str] | None = None, flags: str = "", **opts: list[str]):
    """Positional choices, ``--option`` -> value choices, flags and a safe prefix of one command.

    The prefix (tiny env, tiny budgets, outputs in the fuzz folder) comes first, so drawn options
    override it; every drawn value is small as well, so no drawn command can start a long job.
    """
    options = {"--" + k.replace("_", "-"): v for k, v in opts.items()}
    return {"prefix": prefix.split(), "args": args or [], "flags": flags.split(), "opts": options}


_SPECS: dict[str, dict[str, Any]] = {
    "show": _spec(args=_LOSSES, kind=["classification", "regression", "x"], plot=_PATHS),
    "export": _spec(
        "--out out/e.json",
        _LOSSES,
        out=_PATHS,
        format=["json", "onnx"],
        reduction=["sum", "x"],
        kind=["regression"],
    ),
    "evaluate": _spec(
        "--env fast.yaml --seeds 2 --steps 3",
        _LOSSES,
        "--markdown",
        env=_ENVS,
        seeds=_INTS,
        steps=["-1", "0", "3", "x"],
        csv=_PATHS,
    ),
    "refine": _spec(
        "--env fast.yaml --meta-steps 1 --inner-steps 3 --seeds 2 --out out",
        _LOSSES,
        "--no-verify",
        env=_ENVS,
        seeds=_INTS,
        meta_steps=_STEPS,
        inner_steps=_STEPS,
        out=_PATHS,
    ),
    "meta-train": _spec(
        "--env fast.yaml --meta-steps 1 --inner-steps 3 --seeds 2 --out out/m",
        None,
        "--no-verify",
        env=_ENVS,
        seeds=_INTS,
        seed=_INTS,
        meta_steps=_STEPS,
        inner_steps=_STEPS,
        out=_PATHS,
    ),
    "search": _spec(
        "--env fast.yaml --agent random --budget 1 --out runs",
        None,
        "--no-train",
        env=_ENVS,
        agent=["random", "maskable_ppo", "nope", "bad.yaml", ""],
        budget=["-1", "0", "1", "2", "x", "1e23", "100001"],
        seed=_INTS,
        out=_PATHS,
        name=["n", "", "a/b", ".."],
        init_agent=["nope", "blocked"],
    ),
    "pretrain": _spec(
        "--suite tiny --budget 1 --out pre",
        None,
        "",
        suite=["tiny", "nope", ""],
        agent=["nope", "dqn"],
        budget=["-1", "0", "1", "100001"],
        seed=_INTS,
        resume=["nope", "blocked", "."],
        exclude=["iris_clean", "nope"],
    ),
    "resume": _spec(args=_FOLDERS),
    "runs": _spec(args=_FOLDERS),
    "inspect": _spec(args=_FOLDERS, flags="--json --html", top=["0", "2"]),
}


@st.composite
def _command(draw: st.DrawFn, name: str) -> list[str]:
    """``[name, *prefix, *drawn options, *positionals]``: 0-3 options, mostly one positional."""
    spec = _SPECS[name]
    drawn: list[str] = []
    options = sorted(spec["opts"]) + spec["flags"]
    for _ in range(draw(st.integers(0, 3)) if options else 0):
        option = draw(st.sampled_from(options))
        if option in spec["flags"]:
            drawn.append(option)
        else:
            drawn += [option, draw(st.sampled_from(spec["opts"][option]))]
    # One positional most of the time (a command that can run), sometimes none or two.
    count = draw(st.sampled_from([1, 1, 1, 0, 2])) if spec["args"] else 0
    args = [draw(st.sampled_from(spec["args"])) for _ in range(count)]
    return [name, *spec["prefix"], *drawn, *args]


@pytest.mark.parametrize("name", sorted(_SPECS))
@settings(
    max_examples=25,
    deadline=None,
    # The autouse env fixture needs no reset between examples; the drawn runs take seconds.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzz_every_subcommand_exits_0_2_or_3(
    name: str, fuzz_dir: Path, data: st.DataObject
) -> None:
    args = data.draw(_command(name))
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 2, EXIT_STOPPED_SHORT), (args, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), args
    assert "Traceback" not in result.output, args


_LONG = "x" * 300  # longer than a file name may be: Path.is_dir() raises instead of answering


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", f"/tmp/{_LONG}"],
        ["resume", f"/tmp/{_LONG}"],
        ["runs", f"/tmp/{_LONG}"],
        ["search", "--agent", _LONG, "--budget", "1"],
        ["search", "--env", f"tiny:{_LONG}", "--budget", "1"],
        ["pretrain", "--resume", f"/tmp/{_LONG}"],
    ],
    ids=["inspect", "resume", "runs", "search-agent", "search-env", "pretrain-resume"],
)
def test_paths_too_long_for_a_file_name_are_answered_not_raised(args: list[str]) -> None:
    res = CliRunner().invoke(app, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.exit_code in (0, 2), res.output
    assert "Traceback" not in res.output
