"""The two lock files pin the same environment: requirements.txt (hashed; what `make` installs,
with uv or with pip) and pylock.toml (PEP 751, the same resolution for tools that read it)."""

import re
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def _pins() -> list[tuple[str, str, str]]:
    """(name, version, environment marker or "") of every pin in requirements.txt."""
    return re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\\n;]+)(?: ; ([^\\\n]+))?",
                      (REPO / "requirements.txt").read_text(), flags=re.M)


def _normalised(pins: dict[str, str]) -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", name).lower(): v for name, v in pins.items()}


def test_pylock_pins_what_requirements_txt_pins():
    req = {name: v for name, v, _ in _pins()}
    lock = tomllib.loads((REPO / "pylock.toml").read_text())
    pylock = {p["name"]: p["version"] for p in lock["packages"]}
    assert _normalised(pylock) == _normalised(req)
    assert all(p.get("wheels") or p.get("sdist") for p in lock["packages"])  # hashed artefacts


def test_the_environment_under_test_is_the_lock():
    """`make` installs exactly the lock, nothing resolved on the machine: every package
    requirements.txt pins for this Python and platform is installed at that version."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.markers import Marker

    pins = _pins()
    wrong = []
    for name, pinned, marker in pins:
        if marker and not Marker(marker.strip()).evaluate():
            continue  # another Python or platform's pin
        try:
            have = version(name)
        except PackageNotFoundError:
            have = "missing"
        if have != pinned:
            wrong.append(f"{name} {have} (lock: {pinned})")
    assert len(pins) > 70 and not wrong, wrong
