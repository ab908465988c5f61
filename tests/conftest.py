"""Loads every module of tests/fixtures/ as a pytest plugin, so fixtures live there by topic.

The package is `tests.fixtures` if tests/ is a package, else `fixtures` (pytest's default
rootdir-less import puts tests/ on sys.path); both work without editing this file.
"""

import pkgutil
from pathlib import Path

_FIXTURES_DIR = Path(__file__).parent / "fixtures"
_FIXTURES_PACKAGE = f"{__package__}.fixtures" if __package__ else "fixtures"

pytest_plugins = [
    f"{_FIXTURES_PACKAGE}.{module.name}" for module in pkgutil.iter_modules([str(_FIXTURES_DIR)])
]
