"""docs/operations.md's configuration reference matches collab/config.py.

Every setting (a Settings field, set by its COLLAB_* variable) has exactly one
row in the table under "## Configuration reference", and the row's default
is the code's default; the table names no variable the code does not read.
Add a setting, change a default, or drop one, and this fails until the
operator's guide says so too.

A row looks like ``| `COLLAB_PORT` | `8000` | meaning |``: one variable per
row, the default as the first code span of the second cell, written as an
operator would type it (``30`` for 30.0 seconds, ``true``, ``unset`` for no
value, ``empty`` for an empty list or string, ``generated`` for the
development JWT secret).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from collab.config import Settings, env_var

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
SECTION = "## Configuration reference"
ROW = re.compile(r"^\|\s*`(?P<var>COLLAB_[A-Z0-9_]+)`\s*\|\s*(?P<default>[^|]*)\|(?P<meaning>[^|]*)\|", re.MULTILINE)
#: Defaults that are not a plain value of the field.
SPECIAL = {"jwt_secret": "generated"}


def settings_variables() -> dict[str, str]:
    """COLLAB_* variable -> field name: every Settings field is set by its variable."""
    return {env_var(f.name): f.name for f in dataclasses.fields(Settings)}


def render(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list, str, bytes)) and not value:
        return "empty"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def reference_rows() -> dict[str, tuple[str, str]]:
    text = DOC.read_text()
    assert SECTION in text, f"docs/operations.md has no '{SECTION}' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for match in ROW.finditer(section):
        variable = match["var"]
        assert variable not in rows, f"{variable} has two rows"
        rows[variable] = (match["default"].strip(), match["meaning"].strip())
    return rows


def test_every_setting_has_a_row() -> None:
    missing = sorted(set(settings_variables()) - set(reference_rows()))
    assert not missing, f"docs/operations.md does not document: {missing}"


def test_the_reference_names_no_setting_the_code_lacks() -> None:
    unknown = sorted(set(reference_rows()) - set(settings_variables()))
    assert not unknown, f"docs/operations.md documents settings collab/config.py does not read: {unknown}"


def test_every_row_shows_the_code_default_and_a_meaning() -> None:
    defaults = Settings()
    wrong = {}
    for variable, (default_cell, meaning) in reference_rows().items():
        name = settings_variables().get(variable)
        if name is None:
            continue  # reported by the test above
        shown = re.match(r"`([^`]*)`", default_cell)
        expected = SPECIAL.get(name, render(getattr(defaults, name)))
        if shown is None or shown[1] != expected:
            wrong[variable] = (default_cell, expected)
        assert len(meaning) >= 10, f"{variable}: say what it means"
    assert not wrong, f"defaults in docs/operations.md differ from collab/config.py (shown, expected): {wrong}"


def test_render_writes_defaults_as_an_operator_types_them() -> None:
    assert [render(v) for v in (None, True, False, (), "", 30.0, 0.5, 8000, Path(".collab"))] == [
        "unset", "true", "false", "empty", "empty", "30", "0.5", "8000", ".collab",
    ]
