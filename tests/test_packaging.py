"""The package list, the Dockerfile and the README's quick start stay in agreement."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _quick_start() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^#+\s*Quick start.*?$(.*?)(?=^#+\s|\Z)", readme, re.M | re.S | re.I)
    assert section, "README.md has no Quick start section"
    block = re.search(r"```[^\n]*\n(.*?)```", section.group(1), re.S)
    assert block, "the Quick start section has no code block"
    return [
        line.strip()
        for line in block.group(1).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_every_source_package_is_listed_in_pyproject() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = set()
    for name, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *relative.parts]))
    assert found == listed, f"missing from pyproject: {found - listed}; stale: {listed - found}"


def test_non_python_files_ship_as_package_data() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    package_data = setuptools["package-data"]
    for name, folder in setuptools["package-dir"].items():
        for path in (ROOT / folder).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            in_package = (path.parent / "__init__.py").exists()
            if path.suffix in {".yaml", ".lark", ".json", ".csv", ".mako"} or (
                path.suffix == ".py" and not in_package
            ):
                # Data, or a script outside any package (Alembic migrations): package data
                # of the nearest package above it.
                package_dir = path.parent
                while not (package_dir / "__init__.py").exists():
                    package_dir = package_dir.parent
                package = ".".join([name, *package_dir.relative_to(ROOT / folder).parts])
                relative = path.relative_to(package_dir).as_posix()
                patterns = package_data.get(package, [])
                assert any(fnmatch.fnmatch(relative, p) for p in patterns), (
                    f"{path} is not package data"
                )


def test_quick_start_has_exactly_the_demo_and_the_test_command() -> None:
    commands = _quick_start()
    assert len(commands) == 2
    assert commands[0].endswith("crm-kpi demo")
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_dockerfile_installs_and_runs_as_the_readme_does() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    install = re.search(r"^RUN (python3 -m venv .*)$", dockerfile, re.M)
    assert install, "the Dockerfile has no venv install step"
    demo = _quick_start()[0]
    assert demo.startswith(install.group(1) + " && ")
    assert re.search(r'^ENTRYPOINT \["crm-kpi"\]\s*^CMD \["demo"\]', dockerfile, re.M)
    copied = set(re.findall(r"^COPY (\S+)/ ", dockerfile, re.M))
    setuptools = _pyproject()["tool"]["setuptools"]
    assert copied == set(setuptools["package-dir"].values())


def test_the_dockerfiles_healthcheck_is_the_readmes_on_the_exposed_port() -> None:
    """The image's HEALTHCHECK is plain python on /healthz (slim images have no curl), on the
    port it EXPOSEs, and the README's deployment section shows the same command."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    check = re.search(r"^HEALTHCHECK .*?\\\n\s*CMD (\[.*\])$", dockerfile, re.M)
    assert check, "the Dockerfile has no HEALTHCHECK ... CMD [...]"
    command = check.group(1)
    assert "urllib.request" in command and "/healthz" in command and "curl" not in command
    port = re.search(r"^EXPOSE (\d+)$", dockerfile, re.M)
    assert port and f"127.0.0.1:{port.group(1)}/healthz" in command
    assert check.group(0) in (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_holds_the_kpi_engines_documented_decisions() -> None:
    from crm_kpi_worker.kpis.notes import KPI_NOTES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    body = KPI_NOTES.split("\n", 1)[1].strip()  # without its heading
    assert body in readme, "README's KPI section is out of date: copy kpis/notes.py KPI_NOTES"


def test_loading_a_connector_loads_neither_the_kpi_engine_nor_lark() -> None:
    """Issue "One house": a connector (and the registry) brings in no numpy, lark, KPI engine
    or sandbox; only the pure month arithmetic of kpis.calendar may come along."""
    import subprocess
    import sys

    modules = (
        "crm_kpi_worker.connectors.registry",
        "crm_kpi_worker.connectors.salesforce.connector",
        "crm_kpi_worker.connectors.salesforce.normalize",
        "crm_kpi_worker.connectors.hubspot.connector",
        "crm_kpi_worker.connectors.hubspot.normalize",
    )
    for module in modules:
        loaded = subprocess.run(  # noqa: S603 - our own interpreter on our own module names
            [sys.executable, "-c", f"import sys, {module}; print('\\n'.join(sys.modules))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert module in loaded
        heavy = [
            name
            for name in loaded
            if name.split(".")[0] in ("numpy", "lark")
            or (
                name.startswith(("crm_kpi_worker.sandbox", "crm_kpi_worker.kpis."))
                and name != "crm_kpi_worker.kpis.calendar"
            )
        ]
        assert heavy == [], (module, heavy)
