"""Issue 15: the locked environment, and one clear line when torch / torchaudio do not load."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import REPO
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.version import Version

import ctcasr
from ctcasr.environment import installed


def locked() -> dict[str, list[tuple[Version, Marker | None]]]:
    """requirements.txt as {name: [(version, marker), ...]} (one name can have several lines,
    each for other platforms / Python versions)."""
    pins: dict[str, list[tuple[Version, Marker | None]]] = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if not line or line[0] in " #-":
            continue
        req = Requirement(line.rstrip(" \\"))
        (spec,) = req.specifier
        assert spec.operator == "==", f"requirements.txt: {line!r} is not an exact pin"
        pins.setdefault(req.name.lower(), []).append((Version(spec.version), req.marker))
    return pins


def direct_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]
            ["dev"]]


def test_every_direct_dependency_is_locked_within_its_range():
    pins = locked()
    env = {"python_version": "3.11", "python_full_version": "3.11.7", "extra": "dev"}
    for req in direct_requirements():
        name = req.name.lower()
        assert name in pins, f"{name} is in pyproject.toml but not in requirements.txt"
        for version, marker in pins[name]:
            if marker is None or marker.evaluate(env):
                assert version in req.specifier, \
                    f"requirements.txt pins {name}=={version}, outside pyproject's {req}"
    # every locked line is hashed (pip --require-hashes refuses anything else)
    text = (REPO / "requirements.txt").read_text()
    for block in re.split(r"\n(?=[a-z0-9])", text.strip()):
        assert "--hash=sha256:" in block, f"requirements.txt: no hash for {block.split()[0]}"


def test_the_locked_torch_pair_is_one_that_loads_together():
    # pinned to one release each in pyproject.toml too: no untested wheel reaches an install
    pins = {r.name: r for r in direct_requirements() if r.name in ("torch", "torchaudio")}
    assert [str(pins[n].specifier) for n in ("torch", "torchaudio")] == \
        [f"=={locked()[n][0][0]}" for n in ("torch", "torchaudio")]
    (torch_pin,), (audio_pin,) = locked()["torch"], locked()["torchaudio"]
    # measured (docs/install.md): torchaudio 2.11.1 loads with torch >= 2.13 only
    assert (audio_pin[0] == Version("2.11.0") and torch_pin[0] == Version("2.11.0")) or \
        (audio_pin[0] == Version("2.11.1") and torch_pin[0] >= Version("2.13"))


def test_the_running_environment_is_the_locked_one():
    """make test runs in .venv, made from the lock: what is imported is what is locked."""
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip(f"not run from the project's .venv (sys.prefix is {sys.prefix})")
    pins = locked()
    for name in ("torch", "torchaudio", "numpy", "jiwer", "sentencepiece", "typer", "pytest"):
        have = Version(installed(name)).public
        assert have in [str(v) for v, _ in pins[name]], f"{name} {have} is not the locked one"


def ctcasr_cli(*args: str, broken: str | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter; ``broken`` names a module whose import fails the way
    a mismatched torchaudio wheel does."""
    code = "import sys\n"
    if broken:
        code += (
            "import builtins\n_real = builtins.__import__\n"
            "def _imp(name, *a, **k):\n"
            f"    if name.split('.')[0] == {broken!r}:\n"
            "        raise OSError('Could not load this library: .../libtorchaudio.so\\n"
            "more detail')\n"
            "    return _real(name, *a, **k)\n"
            "builtins.__import__ = _imp\n")
    code += f"sys.argv = ['ctcasr', *{list(args)!r}]\nfrom ctcasr.cli import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize("broken", ["torchaudio", "torch"])
def test_a_broken_torch_pair_is_one_line_and_exit_1(broken, tmp_path):
    r = ctcasr_cli("score", str(tmp_path / "a"), str(tmp_path / "b"), broken=broken)
    assert r.returncode == 1 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith("error: torch ") and "Traceback" not in r.stderr
    assert f"torch {installed('torch')} and torchaudio {installed('torchaudio')}" in line
    assert "Could not load this library" in line and "make -B .venv/.installed" in line


def test_version_names_every_part_even_when_torch_is_broken():
    for broken in (None, "torchaudio"):
        r = ctcasr_cli("--version", broken=broken)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["ctcasr", ctcasr.__version__, "torch", installed("torch"),
                                    "torchaudio", installed("torchaudio"), "python",
                                    sys.version.split()[0]]


def test_onednn_cache_widened_unless_the_user_chose(monkeypatch, tiny_config, corpus, tmp_path):
    """oneDNN's primitive cache gets room for many batch shapes when training starts (and when a
    model is opened for decoding); a capacity the user set is left as it is."""
    from ctcasr.config import load_config
    from ctcasr.environment import ONEDNN_CACHE, widen_onednn_cache
    from ctcasr.train.trainer import train

    monkeypatch.setenv(ONEDNN_CACHE, "2048")
    widen_onednn_cache()
    assert os.environ[ONEDNN_CACHE] == "2048"
    monkeypatch.delenv(ONEDNN_CACHE)
    cfg = load_config(tiny_config, ["train.epochs=1", "train.max_steps=1"])
    train(cfg, corpus, corpus, tmp_path / "exp")
    assert os.environ[ONEDNN_CACHE] == "16384"
