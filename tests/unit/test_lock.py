"""requirements.lock covers what pyproject.toml asks for, pins each package once, with hashes,
at a version the requirement allows (a dependency added without recompiling the lock fails here)."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, tuple[str, int]]:
    """{name: (version, number of hashes)} from requirements.lock."""
    found: dict[str, tuple[str, int]] = {}
    name = ""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^ ;\\]+)", line)
        if match:
            name = canonicalize_name(match.group(1).split("[")[0])
            assert name not in found, f"{name} pinned twice"
            found[name] = (match.group(2), 0)
        elif line.strip().startswith("--hash=sha256:"):
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in ("compress", "serve", "test"):
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    harness = tomllib.loads((ROOT / "harness" / "pyproject.toml").read_text())["project"]
    return wanted + [Requirement(r) for r in harness["dependencies"]]


def test_every_requirement_is_pinned_with_hashes_at_an_allowed_version() -> None:
    locked = pins()
    assert locked, "requirements.lock has no pins"
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is not in requirements.lock: recompile it (README.md, Dependencies)"
        version, hashes = locked[name]
        assert req.specifier.contains(version, prereleases=True), f"requirements.lock pins {name}=={version}, outside {req}"
    assert all(hashes > 0 for _, hashes in locked.values()), "every pin needs its sha256 hashes"
