"""The mock gateway speaks each dialect of docs/protocol.md and refuses what it does not allow."""

from __future__ import annotations

import base64
import io
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from tests.helpers.mock_client import AUTH, DS_ASYNC, DS_SYNC, FLAT, PARAMS, gateway
from wanbatch.mock.flat import RESPONSE_FORMAT_MESSAGE

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]



def flat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "wan2.7-image-pro", "prompt": "a flower shop", "size": "2K", "n": 1, "seed": 7, **extra}


def params_body(parameters: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body = {"model": "wan2.7-image-pro", "prompt": "a bakery at dawn", "size": "1024x1024", "n": 1,
            "response_format": "url", "parameters": {"seed": 3, "thinking_mode": True, **(parameters or {})}}
    return {**body, **extra}


def ds_body(text: str = "a lighthouse", **parameters: Any) -> dict[str, Any]:
    return {"model": "wan2.7-image", "input": {"messages": [{"role": "user", "content": [{"text": text}]}]},
            "parameters": {"size": "1024*1024", "n": 1, "watermark": False, "seed": 1, **parameters}}


async def png_size(client: httpx.AsyncClient, url: str) -> tuple[int, int]:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image.size


async def test_flat_sync_answer_has_openai_shape_and_downloadable_images() -> None:
    async with gateway() as client:
        response = await client.post(FLAT, json=flat_body(n=2, watermark=False), headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) >= {"created", "data", "usage"}
        assert body["usage"] == {"generated_images": 2}
        assert len(body["data"]) == 2
        for item in body["data"]:
            assert item["b64_json"] == "" and item["revised_prompt"] == ""
            assert item["url"].startswith("http://mock.test/files/")
            assert await png_size(client, item["url"]) == (32, 32)
        assert body["data"][0]["url"] != body["data"][1]["url"]


async def test_flat_accepts_pixel_sizes_in_both_spellings() -> None:
    async with gateway() as client:
        for size in ("1920*1080", "1920x1080"):
            response = await client.post(FLAT, json=flat_body(size=size), headers=AUTH)
            assert response.status_code == 200, response.text
            assert await png_size(client, response.json()["data"][0]["url"]) == (30, 17)


async def test_parameters_sync_b64_json_decodes_to_the_image() -> None:
    async with gateway() as client:
        response = await client.post(PARAMS, json=params_body(response_format="b64_json"), headers=AUTH)
        assert response.status_code == 200, response.text
        item = response.json()["data"][0]
        assert item["url"] == ""
        assert Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size == (16, 16)


async def test_parameters_async_task_goes_queued_processing_done() -> None:
    async with gateway(dialect="parameters", task_duration=0.4) as client:
        submitted = await client.post("/v1/images/generations", json=params_body(**{"async": True}),
                                      headers=AUTH)
        assert submitted.status_code == 200, submitted.text
        task = submitted.json()
        assert task["status"] == "queued" and task["progress"] == 0 and task["id"].startswith("task_")
        seen: list[str] = []
        for _ in range(100):
            poll = await client.get(f"/v1/tasks/{task['id']}", headers=AUTH)
            assert poll.status_code == 200
            body = poll.json()
            if "data" in body:
                break
            assert body["id"] == task["id"] and 0 <= body["progress"] <= 99
            seen.append(body["status"])
            await anyio.sleep(0.02)
        assert set(seen) == {"queued", "processing"}
        assert body["usage"] == {"generated_images": 1}
        assert await png_size(client, body["data"][0]["url"]) == (16, 16)
        same = await client.get(f"/parameters/v1/tasks/{task['id']}", headers=AUTH)
        assert same.json()["data"] == body["data"]
        assert (await client.get("/v1/tasks/task_nope", headers=AUTH)).status_code == 404


async def test_tasks_route_exists_only_for_async_dialects() -> None:
    async with gateway(dialect="flat") as client:
        assert (await client.get("/v1/tasks/task_x", headers=AUTH)).status_code == 404
        refused = await client.post(FLAT, json=flat_body(**{"async": True}), headers=AUTH)
        assert refused.json()["error"]["code"] == "invalid_request"


async def test_parameters_enable_sequential_allows_up_to_twelve() -> None:
    async with gateway() as client:
        ok = await client.post(PARAMS, json=params_body({"enable_sequential": True}, n=12), headers=AUTH)
        assert ok.status_code == 200 and len(ok.json()["data"]) == 12
        too_many = await client.post(PARAMS, json=params_body(n=5), headers=AUTH)
        assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "InvalidParameter"


async def test_dashscope_sync_answer() -> None:
    async with gateway() as client:
        response = await client.post(DS_SYNC, json=ds_body(n=2), headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["request_id"] and body["usage"]["image_count"] == 2
        content = [c for choice in body["output"]["choices"] for c in choice["message"]["content"]]
        assert [c["type"] for c in content] == ["image", "image"]
        assert await png_size(client, content[0]["image"]) == (16, 16)


async def test_dashscope_async_pending_running_succeeded_and_unknown() -> None:
    async with gateway(task_duration=0.3) as client:
        refused = await client.post(DS_ASYNC, json=ds_body(), headers=AUTH)
        assert refused.status_code == 403 and refused.json()["code"] == "AccessDenied"
        submitted = await client.post(DS_ASYNC, json=ds_body(),
                                      headers={**AUTH, "X-DashScope-Async": "enable"})
        assert submitted.status_code == 200, submitted.text
        output = submitted.json()["output"]
        assert output["task_status"] == "PENDING"
        statuses: list[str] = []
        for _ in range(100):
            poll = (await client.get(f"/api/v1/tasks/{output['task_id']}", headers=AUTH)).json()
            statuses.append(poll["output"]["task_status"])
            if statuses[-1] == "SUCCEEDED":
                break
            await anyio.sleep(0.02)
        assert {"PENDING", "RUNNING", "SUCCEEDED"} <= set(statuses)
        assert poll["usage"]["image_count"] == 1
        url = poll["output"]["choices"][0]["message"]["content"][0]["image"]
        assert await png_size(client, url) == (16, 16)
        unknown = await client.get("/api/v1/tasks/no-such-task", headers=AUTH)
        assert unknown.status_code == 200 and unknown.json()["output"]["task_status"] == "UNKNOWN"


@pytest.mark.parametrize("status", [500, 400])
async def test_flat_response_format_gets_the_exact_new_api_error(status: int) -> None:
    async with gateway(new_api_status=status) as client:
        response = await client.post(FLAT, json=flat_body(response_format="url"), headers=AUTH)
        assert response.status_code == status
        error = response.json()["error"]
        assert error["type"] == "new_api_error" and error["code"] == "invalid_request"
        assert error["param"] == ""
        assert error["message"].startswith(RESPONSE_FORMAT_MESSAGE + " (request id: ")
        assert ("cannot unmarshal string into Go struct field GeneralOpenAIRequest.response_format"
                in error["message"])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (FLAT, flat_body(thinking_mode=True)),
        (FLAT, flat_body(negative_prompt="blurry")),
        (FLAT, flat_body(parameters={"seed": 1})),
        (PARAMS, params_body(seed=1)),
        (PARAMS, params_body({"prompt_extend": True})),
    ],
)
async def test_unknown_keys_are_refused_as_malformed(path: str, body: dict[str, Any]) -> None:
    async with gateway() as client:
        response = await client.post(path, json=body, headers=AUTH)
        assert response.status_code in (400, 500)
        assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (PARAMS, params_body(size="2048*2048")),
        (PARAMS, params_body(size="2K")),
        (PARAMS, params_body(size="1000x1000")),
        (PARAMS, params_body(model="wan2.7-image", size="4096x4096")),
        (PARAMS, params_body(response_format="png")),
        (FLAT, flat_body(model="wan2.7-image", size="4K")),
        (FLAT, flat_body(model="dall-e-3")),
        (FLAT, flat_body(prompt="  ")),
        (FLAT, flat_body(size="100*100")),
        (FLAT, flat_body(size="4096*400")),
        (FLAT, flat_body(n=0)),
        (FLAT, flat_body(n=True)),
        (FLAT, flat_body(seed=2147483648)),
        (FLAT, flat_body(seed=-1)),
        (DS_SYNC, ds_body(size="2048x2048")),
        (DS_SYNC, ds_body(prompt_extend=True)),
        (DS_SYNC, {"model": "wan2.7-image", "input": {"prompt": "x"}}),
    ],
)
async def test_bad_values_are_refused_as_invalid_parameter(path: str, body: dict[str, Any]) -> None:
    async with gateway() as client:
        response = await client.post(path, json=body, headers=AUTH)
        assert response.status_code == 400, response.text
        payload = response.json()
        code = payload["code"] if path == DS_SYNC else payload["error"]["code"]
        assert code == "InvalidParameter"


async def test_non_json_bodies_are_refused() -> None:
    async with gateway() as client:
        response = await client.post(FLAT, content=b"{not json", headers=AUTH)
        assert response.status_code == 500 and response.json()["error"]["type"] == "new_api_error"
        response = await client.post(DS_SYNC, content=b"[]", headers=AUTH)
        assert response.status_code == 400 and response.json()["code"] == "InvalidParameter"


@pytest.mark.parametrize(("path", "body"), [(FLAT, flat_body()), (DS_SYNC, ds_body())])
async def test_auth_missing_wrong_and_forbidden_keys(path: str, body: dict[str, Any]) -> None:
    secret = "sk-the-real-secret-1234"
    async with gateway(api_key=secret, forbidden_keys=[secret]) as client:
        missing = await client.post(path, json=body)
        wrong = await client.post(path, json=body, headers={"Authorization": "Bearer sk-wrong-key-5678"})
        basic = await client.post(path, json=body, headers={"Authorization": f"Basic {secret}"})
        forbidden = await client.post(path, json=body, headers={"Authorization": f"Bearer {secret}"})
        for response in (missing, wrong, basic):
            assert response.status_code == 401
            assert "InvalidApiKey" in response.text and "sk-" not in response.text
        assert forbidden.status_code == 403 and "Arrearage" in forbidden.text and secret not in forbidden.text
    async with gateway() as client:
        assert (await client.post(path, json=body)).status_code == 401
        anything = {"Authorization": "Bearer anything"}
        assert (await client.post(path, json=body, headers=anything)).status_code == 200


async def test_polls_need_auth_too() -> None:
    async with gateway(dialect="parameters") as client:
        assert (await client.get("/v1/tasks/task_x")).status_code == 401
        assert (await client.get("/api/v1/tasks/x")).status_code == 401


async def test_moderation_refuses_prompts_with_a_listed_word() -> None:
    async with gateway(moderation_words=["Badword"]) as client:
        flat = await client.post(FLAT, json=flat_body(prompt="a badword shop"), headers=AUTH)
        assert flat.status_code == 400 and flat.json()["error"]["code"] == "DataInspectionFailed"
        ds = await client.post(DS_SYNC, json=ds_body(text="BADWORD"), headers=AUTH)
        assert ds.status_code == 400 and ds.json()["code"] == "DataInspectionFailed"
        allowed = await client.post(FLAT, json=flat_body(prompt="forbidden-word"), headers=AUTH)
        assert allowed.status_code == 200
        stats = (await client.get("/_mock/stats")).json()
        assert stats["billed"] == 1


async def test_unknown_route_is_404() -> None:
    async with gateway() as client:
        assert (await client.post("/v1/chat/completions", json={}, headers=AUTH)).status_code == 404
        wrong = await client.post("/v2/images/generations", json=flat_body(), headers=AUTH)
        assert wrong.status_code == 404
