"""The command line: fast --help without torch, `python -m nntrain`, `list`, exit codes."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, assert_clean_error, nntrain_cmd

from nntrain.components import REGISTRIES


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120, **kwargs)


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from nntrain import cli\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'numpy', 'tensorboard') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('no torch')\n"
    )
    for argv in (["nntrain", "--help"], ["nntrain", "fit", "--help"], ["nntrain", "eval", "--help"]):
        result = _run([sys.executable, "-c", f"import sys; sys.argv = {argv!r}\n" + code])
        assert result.returncode == 0, result.stderr
        assert "no torch" in result.stdout


def test_nntrain_console_script_help():
    exe = Path(sys.executable).with_name("nntrain")  # the script of this interpreter's environment
    if not exe.exists():
        pytest.skip(f"no nntrain console script next to {sys.executable}")
    result = _run([str(exe), "--help"])
    assert result.returncode == 0, result.stderr
    for command in ("fit", "eval", "check", "list"):
        assert command in result.stdout
    # Its speed (no torch import) is checked structurally by test_help_does_not_import_torch.


def test_python_dash_m_nntrain():
    result = _run(nntrain_cmd("--help"))
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "fit" in result.stdout
    bare = _run(nntrain_cmd())  # no arguments: the help, not a traceback
    assert "Usage" in bare.stdout + bare.stderr and "Traceback" not in bare.stderr


def test_bad_config_in_a_subprocess_is_one_message_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndata: {dataset: {name: mnist_small}}\nmodel: {name: mlp}\noptimizer: {name: adamm}\n")
    result = _run(nntrain_cmd("check", path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}:4 optimizer.name: unknown optimizer 'adamm'; did you mean 'adam'?" in result.stderr


def test_debug_lets_the_exception_through(cli, tmp_path):
    from nntrain.errors import ConfigError

    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndata: {dataset: {name: mnist_small}}\nmodel: {name: mlp}\noptimizer: {name: adamm}\n")
    result = cli("check", path, "--debug")  # --debug: the traceback instead of one line
    assert isinstance(result.exception, ConfigError)
    assert "did you mean 'adam'" in str(result.exception)


def _titles(out: str) -> list[str]:
    """The table titles `list` printed: lines that are just a registry kind."""
    return [line.strip() for line in out.splitlines() if line.strip() in REGISTRIES]


def test_list_everything(cli):
    result = cli("list")
    assert result.exit_code == 0, result.stderr
    assert _titles(result.stdout) == list(REGISTRIES)
    for kind, registry in REGISTRIES.items():
        for name in registry.names():
            assert name in result.stdout, (kind, name)


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_list_one_kind(cli, kind):
    result = cli("list", kind)
    assert result.exit_code == 0, result.stderr
    for name in REGISTRIES[kind].names():
        assert name in result.stdout
    assert _titles(result.stdout) == [kind]  # only the asked-for table


def test_list_shows_parameters_and_defaults(cli):
    out = cli("list", "optimizers").stdout
    assert "sgd" in out and "lr=" in out and "momentum=" in out
    assert "<from" in cli("list", "models").stdout  # sizes the data determines are marked as such


def test_list_unknown_kind(cli):
    stderr = assert_clean_error(cli("list", "optimizerz"))
    assert "unknown kind 'optimizerz'; did you mean 'optimizers'?" in stderr
    stderr = assert_clean_error(cli("list", "nonsense"))
    assert "unknown kind 'nonsense'" in stderr and "choices: models" in stderr


def test_unknown_command_and_option_are_usage_errors(cli):
    assert cli("trian").exit_code == 2
    assert cli("check", "--nope").exit_code == 2
