"""The YAML files shipped with the package: default mappings, examples and the demo config.

They install as package data next to this module; :func:`path_of` finds them whether the
package runs from a checkout, an editable install or a wheel.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["names", "path_of"]


def names() -> list[str]:
    """Names of the shipped YAML files, sorted."""
    return sorted(
        entry.name
        for entry in files(__name__).iterdir()
        if entry.is_file() and entry.name.endswith(".yaml")
    )


def path_of(name: str) -> Path:
    """Filesystem path of the shipped file ``name`` (e.g. ``"demo-salesforce.yaml"``)."""
    if Path(name).name != name or not name.endswith(".yaml"):
        raise ValueError(f"expected the bare name of a shipped .yaml file, got {name!r}")
    resource = files(__name__).joinpath(name)
    if not resource.is_file():
        raise FileNotFoundError(f"no shipped config file {name!r}; shipped: {', '.join(names())}")
    # Package data installs as plain files (setuptools does not zip): the resource is a path.
    return Path(str(resource))
