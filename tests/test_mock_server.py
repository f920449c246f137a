"""The mock over a real socket (``run_in_thread``) and the ``mock-server`` command."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image

from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.mock.cli import mock_server
from wanbatch.mock.server import bind

pytestmark = pytest.mark.timeout(30)

AUTH = {"Authorization": "Bearer test-key"}
BODY = {"model": "wan2.7-image-pro", "prompt": "a flower shop", "size": "1920*1080", "n": 1, "seed": 5}


def test_run_in_thread_serves_generations_and_images_over_a_socket() -> None:
    with run_in_thread(MockConfig(scale=0.5, image_kb=2000)) as base:
        assert base.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/_mock/stats").json()["first_generation_at"] is None
            before = time.time()
            response = client.post("/v1/images/generations", json=BODY, headers=AUTH)
            assert response.status_code == 200, response.text
            stats = client.get("/_mock/stats").json()  # the pipe as the gateway saw it (benchmarks)
            assert before <= stats["first_generation_at"] <= stats["last_generation_at"] <= time.time()
            url = response.json()["data"][0]["url"]
            assert url.startswith(base + "/files/")
            download = client.get(url)  # > 1 MiB: streamed with a content-length
            assert download.status_code == 200
            assert int(download.headers["content-length"]) == len(download.content) > 1 << 20
            assert Image.open(io.BytesIO(download.content)).size == (960, 540)
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/_mock/stats", timeout=2)


def test_a_client_timeout_leaves_a_billed_generation_and_frees_the_slot() -> None:
    with run_in_thread(MockConfig(faults={"timeout": 1.0}, hang=20, scale=1 / 64)) as base:
        with httpx.Client(base_url=base) as client:
            with pytest.raises(httpx.ReadTimeout):
                client.post("/v1/images/generations", json=BODY, headers=AUTH, timeout=0.3)
            deadline = time.monotonic() + 5
            while (stats := client.get("/_mock/stats").json())["in_flight"] and time.monotonic() < deadline:
                time.sleep(0.05)
        assert stats["billed"] == 1 and stats["in_flight"] == 0


def test_cli_refuses_a_busy_port_with_exit_2() -> None:
    busy = bind("127.0.0.1", 0)
    try:
        result = CliRunner().invoke(mock_server, ["--port", str(busy.getsockname()[1])])
    finally:
        busy.close()
    assert result.exit_code == 2 and "cannot listen" in result.output


@pytest.mark.parametrize(
    "args",
    [["--fault", "nope=0.1"], ["--fault", "429=2"], ["--fail-first", "500=x"], ["--latency", "gamma:1,2"],
     ["--scale", "3"], ["--api-key-env", "WANBATCH_TEST_UNSET_VAR"]],
)
def test_cli_bad_options_exit_2_without_traceback(args: list[str]) -> None:
    result = CliRunner().invoke(mock_server, args, env={"WANBATCH_TEST_UNSET_VAR": ""})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Error" in result.output


def test_cli_serves_prints_its_urls_and_reads_the_key_from_the_environment() -> None:
    env = {**os.environ, "MOCK_KEY": "sk-from-env-4242"}
    code = "from wanbatch.mock.cli import mock_server; mock_server()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--api-key-env", "MOCK_KEY", "--dialect", "parameters"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base = line.split()[3]
        assert base.startswith("http://127.0.0.1:") and base.endswith("/v1") and "dashscope" in line
        assert "sk-from-env" not in line
        root = base.removesuffix("/v1")
        body = {"model": "wan2.7-image", "prompt": "x", "size": "1024x1024", "n": 1, "response_format": "url"}
        for _ in range(100):
            try:
                wrong = httpx.post(base + "/images/generations", json=body, headers=AUTH, timeout=5)
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert wrong.status_code == 401
        right = httpx.post(base + "/images/generations", json=body, timeout=5,
                           headers={"Authorization": "Bearer sk-from-env-4242"})
        assert right.status_code == 200, right.text
        full = httpx.get(root + "/_mock/stats", timeout=5).json()
        brief = httpx.get(root + "/_mock/stats?bodies=0", timeout=5).json()
        assert full["billed"] == brief["billed"] == 1
        assert len(full["bodies"]) == 2 and "bodies" not in brief  # the cheap form to poll
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_the_mock_socket_sends_small_writes_at_once() -> None:
    # asyncio turns Nagle off only on sockets that say they are TCP; on a socket made with proto 0 a
    # response's body, written after its headers, waited ~40 ms for the client's delayed ACK, which
    # added to every generation's latency the benchmarks measured.
    listener = bind("127.0.0.1", 0)
    try:
        assert listener.proto == socket.IPPROTO_TCP
        with socket.create_connection(listener.getsockname()[:2]):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()
