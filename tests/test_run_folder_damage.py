"""Damaged run folders: one line naming the file from every reader and a resume, nothing written.

A finished tiny run is made once per module; each example damages one file of a fresh copy
(truncated, random bytes, zero bytes) and then opens it every way a user can: ``load_run``,
``Search.open``, ``resume``, ``inspect_run`` and the CLI's ``runs`` and ``inspect``. None may
raise anything but a one-line :class:`RunError`, and no file of the run may change.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import loss_rl
from loss_rl import Search, list_runs
from loss_rl.cli import app
from loss_rl.errors import RunError
from loss_rl.inspect import inspect_run
from loss_rl.store import LEDGER, Ledger, Run, check_zip, load_run

runner = CliRunner()
FILES = ("config.yaml", "summary.json", "ledger.sqlite", "agent.zip")
DAMAGE_SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished, verified tiny PPO run: every file of a run folder, best/ included."""
    out = tmp_path_factory.mktemp("finished")
    run = loss_rl.search(env="tiny", agent="ppo", budget=16, out=out, name="run")
    for f in (*FILES, "best/loss.json"):
        assert (run.path / f).is_file(), f
    return run.path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where hypothesis examples put their copies (function-scoped tmp_path would be shared)."""
    return tmp_path_factory.mktemp("copies")


def _copy(finished: Path, root: Path) -> Path:
    dest = Path(tempfile.mkdtemp(dir=root)) / "run"
    shutil.copytree(finished, dest)
    return dest


def _snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the run with its bytes and modification time."""
    return {
        str(f.relative_to(run)): (f.read_bytes(), f.stat().st_mtime_ns)
        for f in sorted(run.rglob("*"))
        if f.is_file()
    }


def _assert_untouched(run: Path, before: dict[str, tuple[bytes, int]]) -> None:
    after = _snapshot(run)
    changed = [name for name, seen in before.items() if after.get(name) != seen]
    assert not changed, f"files of the damaged run were rewritten: {changed}"
    new = [n for n in set(after) - set(before) if not n.startswith("plots/")]
    assert not new, f"files were added to the damaged run: {new}"


def _assert_one_line(err: RunError, file: str) -> None:
    message = str(err)
    assert "\n" not in message, message
    assert file in message, message


def _is_mapping_yaml(data: bytes) -> bool:
    try:
        return isinstance(yaml.safe_load(data.decode("utf-8")), dict)
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return False


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data.decode("utf-8")), dict)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False


def _cli(*args: str) -> Result:
    """Run the CLI in-process, as in a log (no COLUMNS: rich must not fold a row)."""
    res = runner.invoke(app, list(args), env={"COLUMNS": None})
    # CliRunner swallows tracebacks: an uncaught exception shows only here (exit code 1).
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    return res


def _open_every_way(run: Path, file: str, lenient: bool) -> None:
    """Open a damaged run as every reader and a resume do; check errors and untouched files.

    Args:
        run: The damaged copy.
        file: The damaged file's name.
        lenient: The damage left a well-formed YAML mapping in ``config.yaml``: readers may show
            what they can (as for a run from a newer loss_rl), only writers must refuse.
    """
    before = _snapshot(run)
    refused_to_read = False
    try:
        load_run(run)
    except RunError as err:
        _assert_one_line(err, file)
        refused_to_read = True
    assert refused_to_read or lenient

    with pytest.raises(RunError) as info:
        Search.open(run)
    _assert_one_line(info.value, file)
    with pytest.raises(RunError) as info:
        loss_rl.resume(run)
    _assert_one_line(info.value, file)

    if refused_to_read:
        with pytest.raises(RunError) as info:
            inspect_run(run, rollout_policy=False)
        _assert_one_line(info.value, file)

    res = _cli("runs", str(run.parent))
    assert res.exit_code == 0, res.output
    if refused_to_read:
        assert "damaged" in res.output and file in res.output, res.output

    res = _cli("inspect", str(run), "--no-rollout")
    if refused_to_read:
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and file in lines[0], lines

    res = _cli("resume", str(run))
    assert res.exit_code == 2, res.output
    assert file in res.output
    _assert_untouched(run, before)


@DAMAGE_SETTINGS
@given(file=st.sampled_from(FILES), data=st.data())
def test_a_truncated_file_is_refused_in_one_line(
    finished: Path, scratch: Path, file: str, data: st.DataObject
) -> None:
    run = _copy(finished, scratch)
    whole = (run / file).read_bytes()
    keep = data.draw(st.integers(min_value=1, max_value=len(whole) - 1), label="bytes kept")
    (run / file).write_bytes(whole[:keep])
    # A cut config.yaml misses its closing '...' line: never lenient, unlike random bytes.
    _open_every_way(run, file, lenient=False)


@DAMAGE_SETTINGS
@given(file=st.sampled_from(FILES), junk=st.binary(min_size=1, max_size=4096))
def test_random_bytes_in_a_file_are_refused_in_one_line(
    finished: Path, scratch: Path, file: str, junk: bytes
) -> None:
    # Junk that happens to be a JSON object is a well-formed (if empty) summary, not damage.
    assume(not (file == "summary.json" and _is_json_object(junk)))
    run = _copy(finished, scratch)
    (run / file).write_bytes(junk)
    lenient = file == "config.yaml" and _is_mapping_yaml(junk)
    _open_every_way(run, file, lenient=lenient)


@pytest.mark.parametrize("file", FILES)
def test_a_zero_byte_file_is_refused_in_one_line(finished: Path, tmp_path: Path, file: str) -> None:
    run = _copy(finished, tmp_path)
    (run / file).write_bytes(b"")
    _open_every_way(run, file, lenient=False)


def test_a_zero_byte_ledger_is_damage_not_a_fresh_start(finished: Path, tmp_path: Path) -> None:
    run = _copy(finished, tmp_path)
    (run / LEDGER).write_bytes(b"")
    before = _snapshot(run)
    with pytest.raises(RunError, match=r"empty or missing, but .*summary.json counts \d+ eval"):
        loss_rl.resume(run)
    # Not even opened by SQLite: a fresh ledger's tables would make the next try look sound.
    assert (run / LEDGER).stat().st_size == 0
    _assert_untouched(run, before)
    # Without a summary that counts evaluations, an empty ledger is a run that recorded none.
    (run / "summary.json").unlink()
    assert load_run(run).summary is None


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        ("config.yaml", b"\xff\xfeenv: x\n", "not UTF-8"),
        ("config.yaml", b"env: [1, 2\nbudget: 3\n", "not valid YAML"),
        ("config.yaml", b"- 1\n- 2\n", "does not hold a mapping"),
        ("config.yaml", b"# only a comment\n", "is empty"),
        ("summary.json", b'{"status": "fin', "not valid JSON"),
        ("summary.json", b"[1, 2]", "does not hold a JSON object"),
        ("summary.json", b"\x80\x81", "not UTF-8"),
    ],
)
def test_each_kind_of_damage_has_its_own_message(
    finished: Path, tmp_path: Path, file: str, content: bytes, expected: str
) -> None:
    run = _copy(finished, tmp_path)
    (run / file).write_bytes(content)
    with pytest.raises(RunError, match=expected) as info:
        load_run(run)
    _assert_one_line(info.value, file)
    assert "restore it from a backup" in str(info.value)


def test_a_config_cut_at_a_line_end_is_still_refused(finished: Path, tmp_path: Path) -> None:
    # Without the closing '...' line the cut file is valid YAML that loads (here: without its
    # last keys), so a resume would go on with a changed configuration.
    run = _copy(finished, tmp_path)
    text = (run / "config.yaml").read_text()
    assert text.endswith("\n...\n")
    lines = text.splitlines(keepends=True)
    cut = "".join(lines[:-2])
    assert isinstance(yaml.safe_load(cut), dict)
    (run / "config.yaml").write_text(cut)
    with pytest.raises(RunError, match="cut short"):
        Search.open(run)


def test_an_agent_zip_cut_by_a_few_bytes_is_refused(finished: Path, tmp_path: Path) -> None:
    # zipfile.is_zipfile accepts this file: it still ends with the zip nested in agent.zip.
    import zipfile

    run = _copy(finished, tmp_path)
    whole = (run / "agent.zip").read_bytes()
    (run / "agent.zip").write_bytes(whole[:-22])
    assert zipfile.is_zipfile(run / "agent.zip")
    with pytest.raises(RunError, match=r"agent\.zip is not a readable zip archive"):
        check_zip(run / "agent.zip")
    with pytest.raises(RunError, match=r"agent\.zip"):
        loss_rl.resume(run)


def test_a_flipped_byte_in_agent_zip_fails_its_checksum(finished: Path, tmp_path: Path) -> None:
    run = _copy(finished, tmp_path)
    data = bytearray((run / "agent.zip").read_bytes())
    data[len(data) // 3] ^= 0xFF
    (run / "agent.zip").write_bytes(bytes(data))
    with pytest.raises(RunError, match=r"agent\.zip"):
        load_run(run)


def test_a_foreign_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / LEDGER
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    db.close()
    before = path.read_bytes()
    with pytest.raises(RunError, match="not a loss_rl ledger"):
        Ledger(path)
    assert path.read_bytes() == before  # no ledger tables written into someone else's file


def test_a_malformed_schema_version_is_damage(tmp_path: Path) -> None:
    led = Ledger(tmp_path / LEDGER)
    led._db.execute("UPDATE meta SET value='two' WHERE name='schema_version'")
    led._db.commit()
    led.close()
    with pytest.raises(RunError, match="malformed schema version"):
        Ledger(tmp_path / LEDGER)


def test_runs_lists_a_damaged_run_and_goes_on(finished: Path, tmp_path: Path) -> None:
    for name in ("good", "bad"):
        shutil.copytree(finished, tmp_path / name)
    (tmp_path / "bad" / LEDGER).write_bytes(b"\x00" * 5000)
    found = {r.path.name: r for r in list_runs(tmp_path)}
    assert set(found) == {"good", "bad"}
    assert found["good"].damage is None and found["good"].best is not None
    damage = found["bad"].damage
    assert damage is not None and "ledger.sqlite is not an SQLite database" in damage
    with pytest.raises(RunError, match="not an SQLite database"):
        _ = found["bad"].counts
    res = _cli("runs", str(tmp_path))
    assert res.exit_code == 0, res.output
    rows = {line.split()[1]: line for line in res.output.splitlines() if line.startswith("│")}
    assert "finished" in rows["good"]
    assert str(found["good"].best["expression"]) in rows["good"]  # type: ignore[index]
    assert "damaged" in rows["bad"] and "not an SQLite database" in rows["bad"]


def test_a_damaged_run_object_says_why(tmp_path: Path) -> None:
    run = Run.damaged(tmp_path, "ledger.sqlite is truncated")
    for view in ("ledger", "counts", "run_config"):
        with pytest.raises(RunError, match="truncated"):
            getattr(run, view)
