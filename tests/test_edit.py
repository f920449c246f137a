"""Image inputs (editing, references, image sets) end to end: spec → plan → request → mock → index.

Requests go to a real loopback mock gateway (or the built-in one), which records the sha256 of every
input image it received (``/_mock/requests``, ``upstream.inputs``) and draws its outputs from them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import wanbatch
from tests.helpers.chaos import mock_stats
from tests.helpers.servers import serve_app
from wanbatch.cli import main
from wanbatch.dataset.view import DatasetView
from wanbatch.errors import SpecError
from wanbatch.images import fit_input
from wanbatch.mock import MockConfig, run_in_thread
from wanbatch.redact import redact
from wanbatch.runner import RunOptions

KEY_ENV = "WANBATCH_TEST_KEY"
KEY = "sk-test-edit-5c1d9e7a2b"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def gateway() -> Iterator[Callable[..., str]]:
    from contextlib import ExitStack

    with ExitStack() as stack:

        def start(**config: Any) -> str:
            return stack.enter_context(run_in_thread(MockConfig(**config)))

        yield start


def png(path: Path, size: tuple[int, int] = (320, 256), colour: tuple[int, int, int] = (200, 30, 30),
        fmt: str = "PNG") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, fmt)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provider(base: str) -> str:
    return f"{{base_url: '{base}', api_key_env: {KEY_ENV}, dialect: dashscope}}"


def write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def upstream_inputs(base: str) -> list[list[str]]:
    """The input sha256s (or URLs) of each generation request the mock received, in order."""
    log = httpx.get(f"{base}/_mock/requests").json()["requests"]
    return [e["upstream"].get("inputs", []) for e in log if "upstream" in e]


def rows(root: Path) -> list[dict[str, Any]]:
    return DatasetView.open(root).read_index().to_pylist()


def spec_error(path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        wanbatch.load_spec(path)
    return info.value


# ------------------------------------------------------------------------------- a folder


def test_a_folder_of_inputs_is_sent_indexed_and_stored(tmp_path: Path, gateway: Callable[..., str]) -> None:
    base = gateway(scale=0.125)
    shas = {f"photos/p{i}.png": png(tmp_path / f"photos/p{i}.png", colour=(40 * i, 90, 200))
            for i in range(3)}
    spec = wanbatch.load_spec(write(tmp_path, f"""
        provider: {provider(base)}
        images: {{photo: "photos/*.png"}}
        inputs: [photo]
        prompt: "{{instruction}}"
        vars: {{instruction: ["make image 1 snowy", "make image 1 a watercolor"]}}
        seeds: [3]
        sizes: [1K]
        output: {tmp_path / "out"}
    """.replace("\n        ", "\n")))
    result = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}))
    assert result.exit_code == 0
    got = rows(tmp_path / "out")
    assert len(got) == 6 and all(r["status"] == "ok" for r in got)
    for r in got:
        (item,) = r["inputs"]
        assert item == {"sha256": shas[item["source"]], "source": item["source"]}
    # the gateway received exactly those images (as data URIs), one per request
    assert sorted(i for (i,) in upstream_inputs(base)) == sorted([*shas.values()] * 2)
    # each local input is stored once, content-addressed, and found through the view
    view = DatasetView.open(tmp_path / "out")
    for source, sha in shas.items():
        rel = view.input_path(sha)
        assert rel == f"inputs/{sha[:2]}/{sha}.png"
        assert view.read_bytes(rel) == (tmp_path / source).read_bytes()
    assert view.input_path("0" * 64) is None
    # outputs depend on the input: same instruction and seed, other photo → other image
    by_instruction: dict[str, set[str]] = {}
    for r in got:
        by_instruction.setdefault(r["prompt"], set()).add(r["sha256"])
    assert all(len(v) == 3 for v in by_instruction.values())
    # a rerun requests nothing
    billed = mock_stats(base)["billed"]
    again = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}))
    assert again.exit_code == 0 and again.stats.done_images == 0 and mock_stats(base)["billed"] == billed


def test_data_uris_never_reach_index_journal_or_logs(tmp_path: Path) -> None:
    """A gateway that echoes the request body in its error: the failed rows keep no image bytes."""

    async def echo(request: Request) -> JSONResponse:
        body = (await request.body()).decode()
        return JSONResponse({"request_id": "r1", "code": "InvalidParameter", "message": f"bad: {body}"},
                            status_code=400)

    app = Starlette(routes=[Route("/api/v1/services/aigc/multimodal-generation/generation", echo,
                                  methods=["POST"])])
    png(tmp_path / "a.png", colour=(1, 2, 3))
    with serve_app(app) as base:
        spec = wanbatch.load_spec(write(tmp_path, f"""
provider: {provider(base)}
images: {{photo: a.png}}
inputs: [photo]
prompt: "edit image 1"
sizes: [1K]
output: {tmp_path / "out"}
"""))
        notes: list[str] = []
        result = wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY}, on_note=notes.append))
    assert result.exit_code == 1
    (row,) = rows(tmp_path / "out")
    assert row["status"] == "failed" and "bad:" in row["error_message"]
    assert "base64," in row["error_message"] and "iVBOR" not in row["error_message"]  # PNG bytes
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and not path.name.endswith(".png"):
            assert b"iVBORw0KGgo" not in path.read_bytes(), path  # no PNG as base64 in any file
    assert not any("iVBOR" in n for n in notes)
    assert "iVBOR" not in json.dumps(result.summary.to_dict())


def test_redact_cuts_data_uris() -> None:
    text = "got data:image/png;base64," + "A" * 5000 + " end"
    assert redact(text) == "got data:image/png;base64,…(5000 chars) end"


# ------------------------------------------------------------------------------- 9 inputs


def test_nine_inputs_go_in_order_and_ten_are_refused(tmp_path: Path, gateway: Callable[..., str]) -> None:
    base = gateway(scale=0.125)
    shas = [png(tmp_path / f"i{k}.png", colour=(k * 20, 0, 0)) for k in range(10)]
    images = "\n".join(f"  i{k}: i{k}.png" for k in range(10))
    nine = ", ".join(f"i{k}" for k in range(9))
    spec = write(tmp_path, f"""provider: {provider(base)}
images:
{images.replace(chr(10) + "  i9: i9.png", "")}
inputs: [{nine}]
prompt: "fuse images 1 to 9"
sizes: [1K]
output: {tmp_path / "out"}
""")
    result = wanbatch.run(wanbatch.load_spec(spec), RunOptions(env={KEY_ENV: KEY}))
    assert result.exit_code == 0
    assert upstream_inputs(base) == [shas[:9]]
    assert [i["sha256"] for i in rows(tmp_path / "out")[0]["inputs"]] == shas[:9]
    ten = write(tmp_path, f"""provider: {provider(base)}
images:
{images}
inputs: [{nine}, i9]
prompt: "fuse"
sizes: [1K]
""", "ten.yaml")
    err = spec_error(ten)
    assert "ten.yaml:13:" in str(err) and "at most 9 input images" in str(err)


# ------------------------------------------------------------------------------- a dataset


def test_a_dataset_as_input_filtered_by_index_columns(tmp_path: Path, gateway: Callable[..., str]) -> None:
    base_spec = write(tmp_path, """name: base
provider: {type: mock, dialect: dashscope, scale: 0.25, latency: 0s}
prompt: "a {thing}"
vars: {thing: [cat, dog]}
seeds: [1, 2]
sizes: [1K]
output: ds/base
""", "base.yaml")
    made = wanbatch.run(wanbatch.load_spec(base_spec), RunOptions(output=str(tmp_path / "ds/base")))
    assert made.exit_code == 0
    base_rows = {r["image_id"]: r for r in rows(tmp_path / "ds/base")}
    gw = gateway(scale=0.125)
    spec = wanbatch.load_spec(write(tmp_path, f"""provider: {provider(gw)}
images:
  src: {{dataset: ds/base, where: {{seed: 2}}}}
inputs: [src]
prompt: "make image 1 blue"
sizes: [1K]
output: {tmp_path / "out"}
"""))
    assert wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY})).exit_code == 0
    got = rows(tmp_path / "out")
    assert len(got) == 2
    for r in got:
        (item,) = r["inputs"]
        origin = base_rows[item["source"].removeprefix("dataset:")]
        assert origin["seed"] == 2 and origin["sha256"] == item["sha256"]


# ------------------------------------------------------------------------------- bbox, sets


def test_a_bbox_edit_sends_one_box_list_per_input(tmp_path: Path, gateway: Callable[..., str]) -> None:
    base = gateway(scale=0.125)
    png(tmp_path / "a.png")
    png(tmp_path / "b.png", colour=(0, 0, 200))
    text = f"""provider: {provider(base)}
images: {{a: a.png, b: b.png}}
inputs: [a, b]
prompt: "put the object of image 2 into the box of image 1"
params: {{bbox_list: BOXES}}
sizes: [1K]
output: {tmp_path / "out"}
"""
    spec = wanbatch.load_spec(write(tmp_path, text.replace("BOXES", "[[[10, 20, 200, 220]], []]")))
    assert wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY})).exit_code == 0
    log = httpx.get(f"{base}/_mock/requests").json()["requests"]
    assert log[-1]["upstream"]["params"]["bbox_list"] == [[[10, 20, 200, 220]], []]
    (row,) = rows(tmp_path / "out")
    assert json.loads(row["params"])["bbox_list"] == [[[10, 20, 200, 220]], []]
    err = spec_error(write(tmp_path, text.replace("BOXES", "[[[10, 20, 200, 220]]]"), "bad.yaml"))
    assert "bad.yaml:5:" in str(err) and "one per input image (2)" in str(err)
    err = spec_error(write(tmp_path, text.replace("BOXES", "[[[200, 20, 10, 220]], []]"), "bad.yaml"))
    assert "x1 < x2" in str(err)


def test_a_sequential_set_records_its_positions(tmp_path: Path, gateway: Callable[..., str]) -> None:
    base = gateway(scale=0.125)
    png(tmp_path / "hero.png")
    spec = wanbatch.load_spec(write(tmp_path, f"""provider: {provider(base)}
images: {{hero: hero.png}}
inputs: [hero]
prompt: "a four-panel story of the character in image 1"
params: {{enable_sequential: true}}
n: 4
sizes: [1K]
output: {tmp_path / "out"}
"""))
    assert wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY})).exit_code == 0
    got = sorted(rows(tmp_path / "out"), key=lambda r: r["slot"])
    assert [r["slot"] for r in got] == [0, 1, 2, 3] and len({r["sha256"] for r in got}) == 4
    assert all(json.loads(r["params"])["enable_sequential"] is True for r in got)
    assert len(upstream_inputs(base)) == 1  # one request for the set


# ------------------------------------------------------------------------------- validation


BAD_INPUTS: list[tuple[str, Callable[[Path], None], str]] = [
    ("small.png", lambda p: png(p, (100, 300)) and None, "each side must be within 240–8000 px"),
    ("wide.png", lambda p: png(p, (2400, 240)) and None, "aspect ratio must be within 1:8–8:1"),
    ("anim.gif", lambda p: png(p, fmt="GIF") and None, "format gif is not accepted"),
    ("huge.png", lambda p: p.write_bytes(b"\0" * (21 * 1024 * 1024)), "over the 20 MB"),
    ("text.png", lambda p: p.write_text("not an image"), "not an image wanbatch can read"),
]


@pytest.mark.parametrize(("name", "make", "rule"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_each_bad_input_file_is_refused_with_its_rule(tmp_path: Path, name: str,
                                                      make: Callable[[Path], None], rule: str) -> None:
    make(tmp_path / name)
    err = spec_error(write(tmp_path, f"""provider: {{type: mock, dialect: dashscope}}
images:
  photo: {name}
inputs: [photo]
prompt: edit image 1
"""))
    assert f"spec.yaml:3:10: images.photo: {name}:" in str(err) and rule in str(err)


SPEC_RULES: list[tuple[str, str, str]] = [
    ("sizes: [4K]", "spec.yaml:6:", "4K is text-to-image only"),
    ("sizes: [3000*2000]", "spec.yaml:6:", "over 2K"),
    ("params: {thinking_mode: true}", "spec.yaml:6:", "thinking_mode applies to text-to-image only"),
]


@pytest.mark.parametrize(("line", "where", "rule"), SPEC_RULES)
def test_modes_with_inputs_are_checked(tmp_path: Path, line: str, where: str, rule: str) -> None:
    png(tmp_path / "a.png")
    err = spec_error(write(tmp_path, f"""provider: {{type: mock, dialect: dashscope}}
images:
  photo: a.png
inputs: [photo]
prompt: edit image 1
{line}
"""))
    assert where in str(err) and rule in str(err)


DS = "provider: {type: mock, dialect: dashscope}\n"


@pytest.mark.parametrize(("body", "where", "rule"), [
    ("provider: {type: mock}\nimages: {photo: a.png}\ninputs: [photo]\nprompt: x\n",
     "spec.yaml:3:1", "the flat dialect cannot send input images"),
    (DS + "images: {photo: a.png}\ninputs: [phot]\nprompt: x\n",
     "spec.yaml:3:", "did you mean 'photo'"),
    (DS + "images: {photo: a.png}\ninputs: [photo]\nprompt: '{photo}'\n",
     "spec.yaml:4:", "images are sent, not rendered"),
    (DS + "images: {photo: a.png}\nprompt: x\n",
     "spec.yaml:2:", "not sent by any prompt"),
    (DS + "images: {photo: 'nothing/*.png'}\ninputs: [photo]\nprompt: x\n",
     "spec.yaml:2:", "matches no file"),
    (DS + "images: {photo: missing.png}\ninputs: [photo]\nprompt: x\n",
     "spec.yaml:2:", "file not found"),
    (DS + "images: {photo: /etc/hostname}\ninputs: [photo]\nprompt: x\n",
     "spec.yaml:2:", "outside the spec's folder"),
    (DS + "images: {photo: {dataset: nowhere}}\ninputs: [photo]\n"
     "prompt: x\n", "spec.yaml:2:", "no wanbatch dataset"),
    (DS + "params: {enable_sequential: true}\nsizes: [4K]\nprompt: x\n",
     "spec.yaml:3:", "4K is text-to-image only"),
], ids=["dialect", "unknown-input", "rendered", "unused", "glob", "missing", "outside", "dataset", "set-4k"])
def test_spec_rules_of_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, where: str,
                              rule: str) -> None:
    png(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)  # "outside" must be outside the current directory too
    err = spec_error(write(tmp_path, body))
    assert where in str(err) and rule in str(err), str(err)


def test_rows_column_as_input_checked_at_its_line(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    (tmp_path / "edits.csv").write_text("photo,instruction\na.png,make it red\nb.png,make it blue\n")
    err = spec_error(write(tmp_path, """provider: {type: mock, dialect: dashscope}
rows: {file: edits.csv}
inputs: [photo]
prompt: "{instruction}"
"""))
    assert "edits.csv:3" in str(err) and "file not found" in str(err)
    png(tmp_path / "b.png", colour=(0, 0, 9))
    (tmp_path / "edits.csv").write_text("photo,instruction\na.png,make it red\nb.png,make it red\n")
    spec = wanbatch.load_spec(tmp_path / "spec.yaml")
    jobs = list(wanbatch.plan(spec).jobs())
    assert [j.prompt for j in jobs] == ["make it red", "make it red"]  # two images: two jobs
    assert [[i.source for i in j.inputs] for j in jobs] == [["a.png"], ["b.png"]]
    assert spec.warnings == ()  # not "the same prompt as line 2": the rows send other images


# ------------------------------------------------------------------------------- identity


def test_moving_the_folder_keeps_job_ids_and_editing_a_file_changes_one(tmp_path: Path) -> None:
    text = """provider: {type: mock, dialect: dashscope}
images: {photo: "photos/*.png"}
inputs: [photo]
prompt: edit image 1
"""
    first = tmp_path / "a"
    for k in range(3):
        png(first / f"photos/p{k}.png", colour=(k, k, k))
    before = [j.job_id for j in wanbatch.plan(wanbatch.load_spec(write(first, text))).jobs()]
    moved = tmp_path / "b"
    shutil.copytree(first / "photos", moved / "pictures")
    after = [j.job_id for j in wanbatch.plan(wanbatch.load_spec(
        write(moved, text.replace("photos/", "pictures/")))).jobs()]
    assert after == before and len(set(before)) == 3
    png(moved / "pictures/p1.png", colour=(9, 9, 9))
    edited = [j.job_id for j in wanbatch.plan(wanbatch.load_spec(
        write(moved, text.replace("photos/", "pictures/")))).jobs()]
    assert [a == b for a, b in zip(before, edited, strict=True)] == [True, False, True]


def test_a_url_input_is_identified_by_its_url(tmp_path: Path) -> None:
    text = """provider: {type: mock, dialect: dashscope}
images: {photo: [URL]}
inputs: [photo]
prompt: edit image 1
"""
    one = wanbatch.plan(wanbatch.load_spec(write(tmp_path, text.replace("URL", "https://x.test/a.png"))))
    two = wanbatch.plan(wanbatch.load_spec(write(tmp_path, text.replace("URL", "https://x.test/b.png"))))
    (a,), (b,) = list(one.jobs()), list(two.jobs())
    assert a.job_id != b.job_id and a.inputs[0].sha256 is None and a.inputs[0].source == "https://x.test/a.png"


# ------------------------------------------------------------------------------- stages


def test_the_edit_pairs_chain_runs_and_a_rerun_requests_nothing(
        tmp_path: Path, gateway: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped pipeline, pointed at a loopback mock to count what it bills."""
    base = gateway(scale=0.25)
    folder = tmp_path / "pipelines/edit-pairs"
    folder.mkdir(parents=True)
    for name in ("01-base.yaml", "02-edit.yaml"):
        text = (REPO / "pipelines/edit-pairs" / name).read_text()
        (folder / name).write_text(text.replace(
            "{type: mock, dialect: dashscope, scale: 0.25, latency: 0s}", provider(base)))
    stages = [f"pipelines/edit-pairs/{n}" for n in ("01-base.yaml", "02-edit.yaml")]

    monkeypatch.chdir(tmp_path)

    def chain() -> Result:
        return CliRunner().invoke(main, ["run", "--json", *stages], env={KEY_ENV: KEY})

    first = chain()
    assert first.exit_code == 0, first.stderr
    assert [s["done_images"] for s in json.loads(first.stdout)] == [3, 6]
    billed = mock_stats(base)["billed"]
    assert billed == 9
    base_ok = {r["sha256"] for r in rows(tmp_path / "datasets/edit-pairs-base") if r["status"] == "ok"}
    edited = rows(tmp_path / "datasets/edit-pairs-edit")
    assert len(edited) == 6 and all(r["status"] == "ok" for r in edited)
    assert {r["inputs"][0]["sha256"] for r in edited} == base_ok
    assert len({r["prompt"] for r in edited}) == 2
    again = chain()
    assert again.exit_code == 0, again.stderr
    assert [s["done_images"] for s in json.loads(again.stdout)] == [0, 0]
    assert mock_stats(base)["billed"] == billed


def test_plan_of_a_chain_before_it_ran_and_a_fatal_stage_stops_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, on the built-in mock, in a copy of the shipped pipeline (as from a fresh clone)."""
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    monkeypatch.chdir(tmp_path)
    stages = ["pipelines/edit-pairs/01-base.yaml", "pipelines/edit-pairs/02-edit.yaml"]
    plan = CliRunner().invoke(main, ["plan", "--json", *stages])
    assert plan.exit_code == 0, plan.output
    reports = json.loads(plan.stdout)
    assert [r["jobs"] for r in reports] == [3, 0]
    assert CliRunner().invoke(main, ["validate", *stages]).exit_code == 0
    assert "not written yet" in " ".join(reports[1]["warnings"])
    # stage 2 alone, before stage 1 ran: its dataset does not exist → exit 2, nothing after it runs
    (tmp_path / "pipelines/edit-pairs/03-more.yaml").write_text("prompt: x\nprovider: mock\n")
    run = CliRunner().invoke(main, ["run", "--no-progress", stages[1], "pipelines/edit-pairs/03-more.yaml"])
    assert run.exit_code == 2 and "no wanbatch dataset" in run.stderr
    assert "later stages were not run" in run.stderr and not (tmp_path / "datasets/03-more").exists()
    # the whole chain, offline: exit 0, then the plan of stage 2 sees stage 1's images
    assert CliRunner().invoke(main, ["run", "--no-progress", *stages]).exit_code == 0
    again = json.loads(CliRunner().invoke(main, ["plan", "--json", *stages]).stdout)
    assert [(r["jobs"], r["todo_jobs"]) for r in again] == [(3, 0), (6, 0)]


def test_old_datasets_have_no_stored_inputs(tmp_path: Path) -> None:
    """A text-to-image dataset (as main wrote them): inputs null, input_path None, schema unchanged."""
    spec = wanbatch.load_spec(write(tmp_path, "prompt: a cat\nprovider: {type: mock, scale: 0.25}\n"))
    assert wanbatch.run(spec, RunOptions(output=str(tmp_path / "out"))).exit_code == 0
    (row,) = rows(tmp_path / "out")
    assert row["inputs"] is None and not (tmp_path / "out/inputs").exists()
    parts = list((tmp_path / "out/index").glob("*.parquet"))
    assert pq.read_schema(parts[0]).field("inputs").type.value_type.names == ["sha256", "source"]


def test_fit_inputs_reencodes_and_downscales_what_the_user_allows(tmp_path: Path,
                                                                  gateway: Callable[..., str]) -> None:
    base = gateway(scale=0.125)
    gif_sha = png(tmp_path / "anim.gif", fmt="GIF")
    png(tmp_path / "wide.png", (8400, 1050))
    text = f"""provider: {provider(base)}
images: {{a: anim.gif, b: wide.png}}
inputs: [a, b]
prompt: "blend image 1 and image 2"
sizes: [1K]
output: {tmp_path / "out"}
"""
    err = spec_error(write(tmp_path, text))  # refused unless the user allows a change
    assert "format gif is not accepted" in str(err) and "8400×1050 px" in str(err)
    data, width, height = fit_input(tmp_path / "wide.png")  # what fit_inputs would send
    assert (width, height) == (8000, 1000) and data.startswith(b"\x89PNG")
    # a run (the gif alone: cheap) sends and stores exactly what the job id names
    spec = wanbatch.load_spec(write(tmp_path, text.replace("inputs: [a, b]", "inputs: [a]").replace(
        ", b: wide.png", "") + "fit_inputs: true\n"))
    (job,) = wanbatch.plan(spec).jobs()
    (image,) = job.inputs
    assert image.fitted and image.format == "png" and image.sha256 != gif_sha
    assert wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY})).exit_code == 0
    assert upstream_inputs(base) == [[image.sha256]]
    view = DatasetView.open(tmp_path / "out")
    assert view.input_path(image.sha256) == f"inputs/{image.sha256[:2]}/{image.sha256}.png"
    resolved = view.manifest()["spec"]
    assert resolved["fit_inputs"] is True and resolved["fitted_inputs"] == ["anim.gif"]


def test_the_newapi_dialect_sends_inputs_in_the_relayed_input_object(tmp_path: Path,
                                                                     gateway: Callable[..., str]) -> None:
    base = gateway(scale=0.125, dialect="newapi")
    shas = [png(tmp_path / "a.png"), png(tmp_path / "b.png", colour=(0, 90, 0))]
    spec = wanbatch.load_spec(write(tmp_path, f"""provider: {{base_url: '{base}/v1', api_key_env: {KEY_ENV},
  dialect: newapi}}
images: {{a: a.png, b: b.png}}
inputs: [a, b]
prompt: "put the cup of image 2 on the table of image 1"
sizes: [1K]
output: {tmp_path / "out"}
"""))
    assert wanbatch.run(spec, RunOptions(env={KEY_ENV: KEY})).exit_code == 0
    assert upstream_inputs(base) == [shas]
    (entry,) = [e for e in httpx.get(f"{base}/_mock/requests").json()["requests"] if "upstream" in e]
    content = entry["body"]["input"]["messages"][0]["content"]
    assert content == [{"image": f"data:sha256:{shas[0]}"}, {"image": f"data:sha256:{shas[1]}"},
                       {"text": "put the cup of image 2 on the table of image 1"}]
    billed = mock_stats(base)["billed_by_key"]
    assert list(billed.values()) == [1] and json.loads(next(iter(billed)))[5] == shas


def test_an_intent_line_carries_the_inputs_for_recovery() -> None:
    from wanbatch.dataset.ledger import intent_line, job_of
    from wanbatch.types import InputImage, Job

    job = Job("0123456789abcdef", "wan2.7-image", "edit image 1", "1K", 7, 1, {},
              inputs=(InputImage("a.png", "ab" * 32, "png", "/x/a.png"), InputImage("https://x.test/b.png")))
    line = json.loads(json.dumps(intent_line(1, job, [0])))
    assert "base64" not in json.dumps(line) and job_of(line["job"]) == job


def test_probe_of_an_edit_spec_sends_its_first_inputs(tmp_path: Path, gateway: Callable[..., str]) -> None:
    from wanbatch.probe import probe

    base = gateway(scale=0.125)
    sha = png(tmp_path / "a.png")
    spec = wanbatch.load_spec(write(tmp_path, f"""provider: {provider(base)}
images: {{a: a.png}}
inputs: [a]
prompt: "make image 1 green"
params: {{bbox_list: [[[1, 1, 100, 100]]]}}
seeds: [5]
sizes: [1K]
"""))
    verdict = probe(spec, env={KEY_ENV: KEY})
    assert verdict.checks["body accepted"][0] == "ok"
    assert upstream_inputs(base) == [[sha]] * 3
