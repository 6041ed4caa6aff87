"""The README as a newcomer meets it: `make up` builds without a warning, its venv has what the
client snippet imports, and no step of the walk-through undoes what a later step reads (a job
deleted before the sections that read it, a finished job cancelled: a Conflict that stops the
snippet)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[list[str]]:
    return [b.splitlines() for b in re.findall(rf"```{language}\n(.*?)```", README, re.S)]


def client_snippet() -> list[str]:
    section = README[README.index("## The Python client") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1).splitlines()  # type: ignore[union-attr]


@pytest.mark.parametrize("pyproject", ["pyproject.toml", "clients/python/pyproject.toml"])
def test_license_is_an_spdx_expression(pyproject: str) -> None:
    """A `license = {text = …}` table made setuptools print a BuildBackendWarning block three
    times per package in every `make up`; an SPDX string needs setuptools 77."""
    data = tomllib.loads((ROOT / pyproject).read_text())
    assert data["project"]["license"] == "Apache-2.0"
    assert data["build-system"]["requires"] == ["setuptools>=77"]


def test_make_install_has_what_the_client_snippet_imports() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\ninstall:") : makefile.index("\ninstall-dev:")]
    assert "'./clients/python[notebook]'" in recipe
    # a copy: an editable install prints setuptools' "Editable installation" notice
    assert "pip install -q .\n" in recipe and "-e ." not in recipe
    extras = tomllib.loads((ROOT / "clients/python/pyproject.toml").read_text())["project"]
    notebook = " ".join(extras["optional-dependencies"]["notebook"])
    snippet = "\n".join(client_snippet())
    assert ".to_dataframe()" in snippet and "pandas" in notebook
    assert "progress=True" in snippet and "tqdm" in notebook


def test_no_shell_step_deletes_what_a_later_one_reads() -> None:
    lines = [line for block in blocks("bash") for line in block]
    for i, line in enumerate(lines):
        deleted = re.search(r"-X DELETE \S*/v1/\w+/\$(\w+)", line)
        if deleted:
            later = [rest for rest in lines[i + 1 :] if f"${deleted[1]}" in rest]
            assert not later, f"{line!r} deletes ${deleted[1]}, which {later[0]!r} reads after"


def test_the_client_snippet_deletes_last_and_cancels_no_finished_job() -> None:
    lines = client_snippet()
    waited: set[str] = set()
    for i, line in enumerate(lines):
        code = line.split("#")[0]
        if m := re.match(r"(\w+) = \1\.wait\(", code):
            waited.add(m[1])
        for name in re.findall(r"(?:client\.job\()?\b(\w+)(?:\.id\))?\.cancel\(\)", code):
            assert name not in waited, f"{line!r}: {name} has finished, its cancel raises Conflict"
        for name in re.findall(r"(?:client\.job\()?\b(\w+)(?:\.id\))?\.delete\(\)", code):
            later = [rest for rest in lines[i + 1 :] if re.search(rf"\b{name}\b", rest.split("#")[0])]
            assert not later, f"{line!r} deletes {name}, which {later[0]!r} reads after"
