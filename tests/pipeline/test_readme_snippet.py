"""Contract: after the README's setup command (scripts/setup_env.sh, which installs the pack into .venv, editable
and without build isolation, so offline), the README's Python snippet runs exactly as written with the package
imported from the install, not from the working folder, and it gives the same frames as the command line with the
same seed (the API picks the command line's dtype on the same device)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest

from blade_ops.generate import main
from blade_ops.video_io import read_mp4

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "training" / "toy" / "assets"
COPIED = ("blade_ops", "training", "scripts", "pyproject.toml", "README.md", "requirements.txt",
          "requirements-test.txt")


def readme_python_snippets() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def demo_arguments() -> list[str]:
    """The arguments scripts/demo.sh passes to ``python -m blade_ops.generate`` (prompt at its default)."""
    script = (ROOT / "scripts" / "demo.sh").read_text()
    command = script[re.search(r"^python -m blade_ops\.generate", script, flags=re.M).start() :].split('"$@"')[0]
    command = command.replace("\\\n", " ").replace('"$toy', f'"{TOY}')
    command = command.replace("${DEMO_PROMPT:-", "").replace('}"', '"')
    return shlex.split(command)[3:]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the repository after ``bash scripts/setup_env.sh``. Its .venv is made beforehand and sees this
    interpreter's packages through a .pth file (torch, diffusers, setuptools...), so the script installs nothing
    from an index (PIP_NO_INDEX) and only the pack itself goes into the venv, the way the script installs it."""
    repo = tmp_path_factory.mktemp("checkout") / "repo"
    repo.mkdir()
    for name in COPIED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "assets"))
        else:
            shutil.copy(ROOT / name, repo / name)
    (repo / "training" / "toy" / "assets").symlink_to(TOY, target_is_directory=True)
    venv.create(repo / ".venv", with_pip=False)
    (site,) = (repo / ".venv" / "lib").glob("python3*/site-packages")
    (site / "_outer_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = repo / ".venv" / "bin" / "pip"
    pip.write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n')
    pip.chmod(0o755)
    setup = subprocess.run(["bash", "scripts/setup_env.sh"], cwd=repo, env=_env(PIP_NO_INDEX="1"),
                           capture_output=True, text=True, timeout=600)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    return repo


@pytest.mark.slow
def test_readme_snippet_runs_as_written_and_equals_the_command_line(checkout, tmp_path):
    (snippet,) = readme_python_snippets()
    script = tmp_path / "snippet.py"  # outside the checkout: its folder, not the checkout, starts sys.path
    script.write_text(snippet)
    ran = subprocess.run([str(checkout / ".venv" / "bin" / "python"), str(script)], cwd=checkout,
                         env=_env(CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    written = re.search(r'write_mp4\(result\.frames\[0\], "([^"]+)"', snippet).group(1)
    api_frames, _ = read_mp4(checkout / written)

    args = demo_arguments()  # the same request from the command line, as scripts/demo.sh makes it
    assert args[args.index("--prompt") + 1] in snippet
    cli_out = tmp_path / "cli.mp4"
    args[args.index("--output") + 1] = str(cli_out)
    assert main([*args, "--device", "cpu"]) == 0
    cli_frames, _ = read_mp4(cli_out)
    assert api_frames.shape == cli_frames.shape == (17, 128, 128, 3)
    assert cli_frames.max() > 100  # a visible shape, not a black video
    assert np.array_equal(api_frames, cli_frames)


def test_the_installed_package_imports_outside_the_repository(checkout, tmp_path):
    code = "import blade_ops.validation, training.toy; print(blade_ops.__file__)"  # torch-free: quick
    ran = subprocess.run([str(checkout / ".venv" / "bin" / "python"), "-c", code], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == str(checkout / "blade_ops" / "__init__.py")
