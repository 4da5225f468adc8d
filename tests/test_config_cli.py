"""``crm-kpi config ...``: exit codes and output, in process and as the installed command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from crm_kpi_worker.config import path_of
from crm_kpi_worker.sync.cli import main

DATA = Path(__file__).parent / "data" / "config"


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["config", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_validate_a_valid_file_prints_the_summary() -> None:
    path = DATA / "good-minimal.yaml"
    code, out, err = run("validate", str(path))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"{path}: valid"
    assert lines[1] == "sources: 1"
    assert "reporting currency: EUR (conversion: crm)" in lines


def test_validate_an_invalid_file_lists_every_problem_on_stderr() -> None:
    path = DATA / "many-mistakes.yaml"
    code, out, err = run("validate", str(path))
    assert (code, out) == (4, "")  # exit code 4: config error
    lines = err.splitlines()
    assert len(lines) == 10
    assert lines[1] == (
        f"{path}:11:7: sources[0].mapping.amout: unknown key 'amout'; did you mean 'amount'?"
    )
    assert lines[-1] == f"9 problems found in {path}"


def test_validate_a_syntax_error() -> None:
    path = DATA / "syntax-error.yaml"
    code, _, err = run("validate", str(path))
    assert code == 4
    assert err.splitlines() == [
        f"{path}:6:24: YAML syntax error: expected ',' or '}}', but got ':' (while parsing a flow"
        " mapping at line 5)",
        f"1 problem found in {path}",
    ]


def test_validate_an_unreadable_file_exits_4(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    code, out, err = run("validate", str(missing))
    assert (code, out) == (4, "")
    assert err == f"error: {missing}: cannot read the file: No such file or directory\n"
    code, _, err = run("validate", str(tmp_path))
    assert code == 4 and "Is a directory" in err


def test_validate_check_secrets(tmp_path: Path) -> None:
    path = DATA / "good-minimal.yaml"
    code, _, err = run(
        "validate", str(path), "--check-secrets", env={"SF_USERNAME": None, "SF_PASSWORD": None}
    )  # type: ignore[dict-item]
    assert code == 4
    assert err.splitlines() == [
        f"{path}:7:7: sources[0].auth.username: environment variable SF_USERNAME is not set",
        f"{path}:8:7: sources[0].auth.password: environment variable SF_PASSWORD is not set",
        f"2 problems found in {path}",
    ]
    env = {"SF_USERNAME": "svc@example.com", "SF_PASSWORD": "pa55word-value"}
    code, out, err = run("validate", str(path), "--check-secrets", env=env)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"{path}: valid (secrets and files checked)"
    assert "pa55word-value" not in out


def test_show_default_and_examples() -> None:
    code, out, _ = run("show-default", "salesforce")
    assert code == 0
    assert out == path_of("salesforce-default-mapping.yaml").read_text(encoding="utf-8")
    assert "crm: Id. Decision Makers" in out
    code, out, _ = run("show-default", "hubspot")
    assert code == 0 and "crm: closedwon" in out
    code, out, _ = run("show-example", "demo")
    assert code == 0 and out == path_of("demo-salesforce.yaml").read_text(encoding="utf-8")
    code, _, err = run("show-default", "pipedrive")
    assert code == 2 and "Invalid value" in err


def test_help_lists_the_commands() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for command in ("validate", "show-default", "show-example"):
        assert command in out


def installed_command() -> Path:
    command = Path(sys.executable).parent / "crm-kpi"
    if not command.exists():
        pytest.fail(f"the crm-kpi entry point is not installed next to {sys.executable}")
    return command


@pytest.mark.parametrize("name", ["example-salesforce.yaml", "demo-salesforce.yaml"])
def test_installed_command_validates_the_shipped_files(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_KPI_SF_")}
    result = subprocess.run(  # noqa: S603
        [str(installed_command()), "config", "validate", str(path_of(name))],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[0] == f"{path_of(name)}: valid"
    assert "reporting currency: EUR" in result.stdout


def test_installed_command_reports_problems_with_exit_4() -> None:
    result = subprocess.run(  # noqa: S603
        [str(installed_command()), "config", "validate", str(DATA / "many-mistakes.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 4
    assert result.stderr.splitlines()[-1] == f"9 problems found in {DATA / 'many-mistakes.yaml'}"
