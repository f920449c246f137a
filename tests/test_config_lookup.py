"""Which ``wanbatch.yaml`` names a provider: beside the spec, then the user's config dir, or only
the file given by ``--config`` — never the current directory's, which once sent the key to another
host (``cd untrusted-repo && wanbatch run ../spec.yaml``). Each test runs the CLI in a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cli_env
from wanbatch import load_spec
from wanbatch.errors import SpecError
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.planreport import plan_report

pytestmark = pytest.mark.timeout(60)

KEY_ENV = "WANBATCH_CONFIG_TEST_KEY"


def provider_file(folder: Path, base_url: str, name: str = "prod") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "wanbatch.yaml"
    path.write_text(f"providers:\n  {name}:\n    base_url: {base_url}\n    api_key_env: {KEY_ENV}\n")
    return path


def spec_in(folder: Path, out: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "spec.yaml"
    spec.write_text(f"name: c\nprovider: prod\nprompt: a cat\nsizes: [1K]\n"
                    f"limits: {{retries: 0, request_timeout: 3}}\noutput: {out}\n")
    return spec


def cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = cli_env(**{KEY_ENV: "sk-config-test-key-123456", "HOME": str(home),
                     "XDG_CONFIG_HOME": str(home / "xdg")})
    return subprocess.run([sys.executable, "-m", "wanbatch", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=cwd)


def test_the_current_directory_config_never_receives_the_key(tmp_path: Path) -> None:
    """A listening socket stands for the untrusted host: nothing may even connect to it."""
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.setblocking(False)
    untrusted = tmp_path / "untrusted-repo"
    provider_file(untrusted, f"http://127.0.0.1:{trap.getsockname()[1]}/v1")
    with run_in_thread(MockConfig(scale=0.25, image_kb=4.0)) as good:
        trusted = provider_file(tmp_path / "project", f"{good}/v1")
        spec = spec_in(tmp_path / "project", tmp_path / "ds")
        done = cli("run", str(spec), "--no-progress", cwd=untrusted, home=tmp_path)
    with pytest.raises(BlockingIOError):
        trap.accept()  # no connection was ever made to the untrusted host
    trap.close()
    assert done.returncode == 0, done.stderr
    assert f"provider prod (gateway) defined in {trusted}" in done.stderr


def test_only_the_current_directory_defines_it_unknown_with_a_hint(tmp_path: Path) -> None:
    here = tmp_path / "here"
    provider_file(here, "http://127.0.0.1:9/v1")
    spec = spec_in(tmp_path / "project", tmp_path / "ds")
    done = cli("validate", str(spec), cwd=here, home=tmp_path)
    assert done.returncode == 2 and "unknown provider 'prod'" in done.stderr, done.stderr
    assert "not read unless you pass --config" in done.stderr and "Traceback" not in done.stderr
    explicit = cli("plan", str(spec), "--config", str(here / "wanbatch.yaml"), cwd=here, home=tmp_path)
    assert explicit.returncode == 0, explicit.stderr
    assert str(here / "wanbatch.yaml") in explicit.stdout.replace("\n", "")  # plan says where it came from


def test_order_beside_the_spec_then_the_user_config_dir(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    user = provider_file(tmp_path / "xdg" / "wanbatch", "http://127.0.0.1:9/user")
    spec = spec_in(tmp_path / "project", tmp_path / "ds")
    report = plan_report(str(spec))
    assert report["provider_defined_in"] == str(user)
    beside = provider_file(tmp_path / "project", "http://127.0.0.1:9/beside")
    loaded = load_spec(spec)
    assert loaded.provider.base_url == "http://127.0.0.1:9/beside"
    assert loaded.provider.defined_in == str(beside)
    assert "defined_in" not in loaded.resolved()["provider"]  # not recorded in the manifest


def test_an_explicit_config_is_the_only_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    provider_file(tmp_path / "project", "http://127.0.0.1:9/beside")
    other = provider_file(tmp_path / "elsewhere", "http://127.0.0.1:9/other", name="staging")
    spec = spec_in(tmp_path / "project", tmp_path / "ds")
    with pytest.raises(SpecError, match="unknown provider 'prod'; defined: staging"):
        load_spec(spec, config=other)
    with pytest.raises(SpecError, match="given by --config"):
        load_spec(spec, config=tmp_path / "nope.yaml")
