"""The playground at `/`, used the way a person uses it: in Debian's Chromium, against a real server with the
real offline engines. Every state is screenshotted (see the `screenshot` fixture for where)."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fakes import CountsSteps
from PIL import Image
from playwright.sync_api import Page, expect
from servers import serving

from retouch.api.app import create_app
from retouch.config import Settings
from retouch.jobs.access import new_key
from retouch.models import MODELS

pytestmark = pytest.mark.slow

RED_BAR = (slice(228, 252), slice(200, 440))


def photo_with_a_red_bar(path: Path) -> np.ndarray:
    """A 640×480 PNG: grey texture (seeded) with a red bar across its middle, the thing to erase."""
    generator = np.random.default_rng(4)
    texture = generator.normal(0, 12, (480 // 8, 640 // 8, 3)).repeat(8, axis=0).repeat(8, axis=1)
    pixels = np.clip(130 + texture + generator.normal(0, 4, (480, 640, 3)), 0, 255).astype(np.uint8)
    pixels[RED_BAR] = (220, 30, 30)
    Image.fromarray(pixels).save(path)
    return pixels


def reddish(pixels: np.ndarray) -> np.ndarray:
    red, green, blue = (pixels[..., channel].astype(int) for channel in range(3))
    return (red > 170) & (green < 90) & (blue < 90)


def shown_image(page: Page, selector: str) -> np.ndarray:
    """The pixels of an <img> as the page decoded them (RGBA), read through a canvas at the image's own size."""
    width, height, data = page.evaluate(
        """(selector) => {
            const image = document.querySelector(selector);
            const canvas = document.createElement("canvas");
            canvas.width = image.naturalWidth;
            canvas.height = image.naturalHeight;
            const context = canvas.getContext("2d");
            context.drawImage(image, 0, 0);
            const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let text = "";
            for (let start = 0; start < pixels.length; start += 32768) {
                text += String.fromCharCode(...pixels.subarray(start, start + 32768));
            }
            return [canvas.width, canvas.height, btoa(text)];
        }""",
        selector,
    )
    return np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(height, width, 4)


def open_playground(page: Page, base_url: str, slug: str) -> None:
    page.goto(f"{base_url}/#{slug}")
    expect(page.locator("#model-title")).to_have_text(slug)


def run_and_wait(page: Page, outcome: str = "done", timeout: float = 90_000) -> None:
    page.click("#run")
    page.wait_for_selector(f"body[data-state={outcome}]", timeout=timeout)


def drag(page: Page, points: list[tuple[float, float]]) -> None:
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=4)
    page.mouse.up()


def touch_drag(page: Page, points: list[tuple[float, float]]) -> None:
    """A finger drawn across the screen: touch events through the DevTools protocol (Playwright's touchscreen only taps)."""
    session = page.context.new_cdp_session(page)
    touch = lambda x, y: [{"x": x, "y": y, "radiusX": 4, "radiusY": 4, "force": 1, "id": 1}]
    session.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": touch(*points[0])})
    for x, y in points[1:]:
        session.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": touch(x, y)})
    session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    session.detach()


def test_magic_eraser_erases_the_painted_stroke_and_nothing_else(serve_retouch, new_page, screenshot, tmp_path):
    source = tmp_path / "bar.png"
    original = photo_with_a_red_bar(source)
    with serve_retouch() as base_url:
        page = new_page()
        open_playground(page, base_url, "magic-eraser")
        screenshot(page, "1-form")
        run_and_wait(page, "refused")
        expect(page.locator("#error")).to_contain_text("Add image")
        page.set_input_files("#field-image", str(source))
        expect(page.locator("#painter-tools")).to_be_visible()
        expect(page.locator("#input-size")).to_have_text("640 × 480")
        # PNG out: outside the hole the output must equal the input exactly, with no JPEG noise to allow for.
        page.select_option("#field-output_format", "png")
        page.fill("#field-grow_mask", "4")

        box = page.locator("#paint-canvas").bounding_box()
        scale = box["width"] / 640
        brush_screen = float(page.locator("#brush-size").input_value())
        radius = brush_screen / 2 / scale
        at = lambda x, y: (box["x"] + x * scale, box["y"] + y * scale)
        stroke = [at(x, 240) for x in range(190, 451, 20)]
        drag(page, stroke)
        expect(page.locator("#mask-coverage")).not_to_have_text("nothing painted yet")
        screenshot(page, "2-painted")
        run_and_wait(page)
        screenshot(page, "3-result")

        result = shown_image(page, "#result-image")
        assert result.shape[:2] == original.shape[:2]
        assert reddish(original[RED_BAR]).mean() == 1.0
        assert reddish(result[RED_BAR][..., :3]).mean() < 0.05, "the red bar under the stroke was not erased"
        rows, columns = np.mgrid[0:480, 0:640]
        # Distance to the stroke's segment (y = 240, x from 190 to 450), beyond the brush, grow_mask and a pixel's rounding.
        along = np.clip(columns, 190, 450)
        distance = np.hypot(columns - along, rows - 240)
        outside = distance > radius + 4 + 2
        assert outside.mean() > 0.5
        assert np.array_equal(result[outside][..., :3], original[outside]), "pixels outside the painted stroke changed"

        expect(page.locator("#metrics")).to_contain_text("patchmatch")
        expect(page.locator("#metrics")).to_contain_text("Seed")
        download = page.locator("#download")
        assert download.get_attribute("download").endswith(".png")
        with page.expect_download() as saved:
            download.click()
        assert np.array_equal(np.asarray(Image.open(saved.value.path()).convert("RGBA")), result)


def test_the_painter_works_by_touch_on_a_phone_with_undo_redo_invert_and_clear(serve_retouch, new_page, screenshot, tmp_path):
    source = tmp_path / "bar.png"
    photo_with_a_red_bar(source)
    with serve_retouch() as base_url:
        page = new_page(mobile=True)
        open_playground(page, base_url, "magic-eraser")
        screenshot(page, "1-form-phone")
        page.set_input_files("#field-image", str(source))
        canvas = page.locator("#paint-canvas")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        touch_drag(page, [(box["x"] + box["width"] * share, box["y"] + box["height"] / 2) for share in (0.2, 0.35, 0.5, 0.65)])
        coverage = page.locator("#mask-coverage")
        expect(coverage).to_have_text(re.compile(r"^\d+\.\d % selected$"))
        painted_text = coverage.text_content()
        painted = float(painted_text.split()[0])
        assert 2 < painted < 40, painted_text
        screenshot(page, "2-painted-by-touch")
        page.click("#undo")
        expect(coverage).to_have_text("nothing painted yet")
        page.click("#redo")
        expect(coverage).to_have_text(painted_text)
        page.click("#invert")
        inverted = float(coverage.text_content().split()[0])
        assert abs(inverted - (100 - painted)) < 0.2
        page.click("#clear")
        expect(coverage).to_have_text("0.0 % selected")
        page.click("#undo")
        page.click("#undo")
        run_and_wait(page)
        canvas.scroll_into_view_if_needed()
        screenshot(page, "3-result-phone")
        expect(page.locator("#result-image")).to_be_visible()


@pytest.mark.parametrize("size", ["laptop", "phone"])
def test_background_eraser_cut_out_shows_over_a_checkerboard(serve_retouch, new_page, screenshot, tmp_path, size):
    from skimage import data

    source = tmp_path / "coffee.jpg"
    Image.fromarray(data.coffee()).save(source, quality=92)
    with serve_retouch(background_eraser_model="u2netp") as base_url:
        page = new_page(mobile=size == "phone")
        open_playground(page, base_url, "background-eraser")
        page.set_input_files("#field-image", str(source))
        page.uncheck("#field-return_mask")
        run_and_wait(page)
        page.locator("#result-stage").scroll_into_view_if_needed()
        screenshot(page, f"cut-out-{size}")
        cut_out = shown_image(page, "#result-image")
        assert cut_out.shape == (400, 600, 4)
        alpha = cut_out[..., 3]
        assert (alpha == 0).mean() > 0.1 and (alpha == 255).mean() > 0.1
        # Shown on its own over the checkerboard, not over the photo.
        expect(page.locator("input[name=result-view][value=plain]")).to_be_checked()
        expect(page.locator("#result-before")).to_be_hidden()
        stage = page.locator("#result-stage")
        expect(stage).to_have_attribute("data-transparent", "true")
        assert "linear-gradient" in stage.evaluate("element => getComputedStyle(element).backgroundImage")

        # The mask instead: shown as a coloured overlay on the photo.
        page.check("#field-return_mask")
        run_and_wait(page)
        expect(page.locator("input[name=result-view][value=overlay]")).to_be_checked()
        expect(page.locator("#result-overlay")).to_be_visible()
        screenshot(page, f"mask-overlay-{size}")


def test_an_invalid_parameter_shows_the_servers_error_beside_the_form(serve_retouch, new_page, screenshot, tmp_path):
    from skimage import data

    source = tmp_path / "cat.jpg"
    Image.fromarray(data.chelsea()).save(source, quality=92)
    with serve_retouch() as base_url:
        page = new_page()
        # The browser logs the refused request itself.
        new_page.allow(r"status of 400")
        open_playground(page, base_url, "inpaint-mask-maker")
        page.set_input_files("#field-image", str(source))
        page.fill("#field-prompt", "cat")
        page.fill("#field-grow_mask", "500")
        run_and_wait(page, "failed")
        error = page.locator("#error")
        expect(error).to_contain_text("grow_mask=500")
        expect(error).to_contain_text("0 to 100")
        expect(page.locator("#progress-line")).to_contain_text("Refused")
        screenshot(page, "error")

        page.fill("#field-grow_mask", "10")
        run_and_wait(page)
        expect(page.locator("#error")).to_be_hidden()
        expect(page.locator("#metrics")).to_contain_text("Detections")
        # return_mask is false by default here: the output is the photo with the boxes drawn by the server.
        page.check("input[name=result-view][value=overlay]")
        expect(page.locator("#result-boxes rect").first).to_be_attached()
        expect(page.locator("#result-boxes text").first).to_contain_text("cat")
        screenshot(page, "detections")


def test_copy_as_python_gives_a_script_that_runs(serve_retouch, new_page, tmp_path):
    from skimage import data

    source = tmp_path / "coffee.jpg"
    Image.fromarray(data.coffee()).save(source, quality=92)
    with serve_retouch(background_eraser_model="u2netp") as base_url:
        page = new_page()
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
        open_playground(page, base_url, "background-eraser")
        page.set_input_files("#field-image", str(source))
        page.uncheck("#field-return_mask")
        page.click("summary")
        page.click("#copy-python")
        expect(page.locator("#copied")).to_contain_text("Copied")
        script = page.evaluate("navigator.clipboard.readText()")
        assert '"return_mask": False' in script
        assert "more characters" in page.locator("#snippet").text_content(), "the page shows the base64 abridged"
        folder = tmp_path / "run"
        folder.mkdir()
        (folder / "request.py").write_text(script)
        subprocess.run([sys.executable, "request.py"], cwd=folder, check=True, timeout=120)
        saved = np.asarray(Image.open(folder / "output-0.png"))
        assert saved.shape == (400, 600, 4)

        page.click("#copy-curl")
        curl = page.evaluate("navigator.clipboard.readText()")
        assert curl.startswith(f"curl -sS -X POST '{base_url}/v2/background-eraser'")


@contextmanager
def serving_with(settings: Settings, models: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    app = create_app(settings, models=models, workers=1)
    with serving(app) as base_url:
        yield base_url, app


def test_progress_and_cancel_while_it_runs(installed_weights_dir, new_page, screenshot, tmp_path):
    settings = Settings(home=tmp_path / "home", weights_dir=installed_weights_dir, min_free_bytes=0)
    with serving_with(settings, {**MODELS, "fake-counts-steps": CountsSteps()}) as (base_url, _):
        page = new_page()
        # A cancelled request's status is a 422 (as the hosted API serves an ended request), which the browser logs.
        new_page.allow(r"status of 422")
        open_playground(page, base_url, "fake-counts-steps")
        photo_with_a_red_bar(tmp_path / "any.png")
        page.set_input_files("#field-image", str(tmp_path / "any.png"))
        page.fill("#field-steps", "400")
        page.fill("#field-step_seconds", "0.1")
        page.click("#run")
        expect(page.locator("#progress-line")).to_contain_text("Processing", timeout=20_000)
        expect(page.locator("#progress-line")).to_have_text(re.compile(r"Processing [1-9]\d? %"), timeout=20_000)
        screenshot(page, "processing")
        started = time.monotonic()
        page.click("#cancel")
        page.wait_for_selector("body[data-state=failed]", timeout=20_000)
        assert time.monotonic() - started < 10
        expect(page.locator("#error")).to_contain_text("cancel")
        expect(page.locator("#progress-line")).to_contain_text("Cancelled")
        screenshot(page, "cancelled")


def test_the_api_key_is_asked_for_kept_and_sent(installed_weights_dir, new_page, screenshot, tmp_path):
    settings = Settings(home=tmp_path / "home", weights_dir=installed_weights_dir, min_free_bytes=0, auth=True)
    with serving_with(settings, MODELS) as (base_url, app):
        service = app.state.service
        key, secret = new_key("playground", ("background-eraser",), None, None, service.slugs, time.time())
        service.store.create_key(key)
        page = new_page()
        new_page.allow(r"status of 40[13]")
        page.goto(base_url)
        expect(page.locator("#error")).to_contain_text("needs an API key")
        screenshot(page, "no-key")
        page.fill("#api-key", secret)
        page.press("#api-key", "Enter")
        page.locator("#api-key").blur()
        expect(page.locator("#model-title")).to_have_text("magic-eraser")
        # Kept in the browser: a reload lists the models again with no typing.
        page.reload()
        expect(page.locator("#model-title")).to_have_text("magic-eraser")
        expect(page.locator("#api-key")).to_have_value(secret)
        # This key may use background-eraser only: the refusal says so.
        photo_with_a_red_bar(tmp_path / "any.png")
        page.set_input_files("#field-image", str(tmp_path / "any.png"))
        page.locator("#paint-canvas").click()
        run_and_wait(page, "failed")
        expect(page.locator("#error")).to_contain_text("may not use magic-eraser")
        screenshot(page, "key-refused")


def put_file(page: Page, path: Path, event: str, selector: str) -> None:
    """A file pasted (a ClipboardEvent on the document) or dropped (a DragEvent on `selector`), as the browser makes them."""
    page.evaluate(
        """async ([data, name, event, selector]) => {
            const bytes = Uint8Array.from(atob(data), (character) => character.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            if (event === "paste") {
                document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
            } else {
                const target = document.querySelector(selector);
                target.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
                target.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
            }
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name, event, selector],
    )


def test_bg_replace_takes_a_pasted_photo_and_a_dropped_reference_and_shows_every_sample(serve_retouch, new_page, screenshot, tmp_path):
    from skimage import data

    photo, reference = tmp_path / "coffee.png", tmp_path / "scene.png"
    Image.fromarray(data.coffee()).save(photo)
    Image.fromarray(data.rocket()).save(reference)
    with serve_retouch(background_eraser_model="u2netp") as base_url:
        page = new_page()
        open_playground(page, base_url, "bg-replace")
        put_file(page, photo, "paste", "")
        expect(page.locator("#input-size")).to_have_text("600 × 400")
        put_file(page, reference, "drop", "fieldset[data-field=ref_image] .drop")
        expect(page.locator("fieldset[data-field=ref_image] .thumbnail")).to_be_visible()
        page.fill("#field-prompt", "on a launch pad")
        page.fill("#field-samples", "2")
        page.fill("#field-seed", "7")
        run_and_wait(page)
        screenshot(page, "samples")
        samples = page.locator("#samples button")
        expect(samples).to_have_count(2)
        first = shown_image(page, "#result-image")
        samples.nth(1).click()
        expect(samples.nth(1)).to_have_attribute("aria-pressed", "true")
        second = shown_image(page, "#result-image")
        assert first.shape == second.shape == (400, 600, 4)
        assert not np.array_equal(first, second), "the two samples are the same picture"
        expect(page.locator("#metrics")).to_contain_text("composite")
        expect(page.locator("#metrics")).to_contain_text("7, 8")
        assert page.locator("#download").get_attribute("download").endswith("-2.jpg")


def test_a_double_click_on_run_sends_one_request(serve_retouch, new_page, tmp_path):
    # A large photo with a stroke on it: the mask takes a moment to encode, in which a second click lands.
    source = tmp_path / "large.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (2000, 3000, 3), dtype=np.uint8)).save(source, quality=80)
    with serve_retouch() as base_url:
        page = new_page()
        submitted: list[str] = []
        page.on("request", lambda request: submitted.append(request.url) if request.method == "POST" else None)
        open_playground(page, base_url, "magic-eraser")
        page.set_input_files("#field-image", str(source))
        expect(page.locator("#input-size")).to_have_text("3000 × 2000")
        box = page.locator("#paint-canvas").bounding_box()
        drag(page, [(box["x"] + box["width"] * share, box["y"] + box["height"] / 2) for share in (0.4, 0.5, 0.6)])
        page.dblclick("#run")
        page.wait_for_selector("body[data-state=done]", timeout=60_000)
        assert submitted == [f"{base_url}/v2/magic-eraser"]


def test_leaving_a_model_while_it_runs_cancels_the_run_and_shows_nothing_of_it(installed_weights_dir, new_page, tmp_path):
    import httpx

    settings = Settings(home=tmp_path / "home", weights_dir=installed_weights_dir, min_free_bytes=0)
    with serving_with(settings, {**MODELS, "fake-counts-steps": CountsSteps()}) as (base_url, _):
        page = new_page()
        open_playground(page, base_url, "fake-counts-steps")
        photo_with_a_red_bar(tmp_path / "any.png")
        page.set_input_files("#field-image", str(tmp_path / "any.png"))
        page.fill("#field-steps", "100")
        page.fill("#field-step_seconds", "0.1")
        page.click("#run")
        expect(page.locator("#progress-line")).to_contain_text("Processing", timeout=20_000)
        request_id = page.locator("body").get_attribute("data-request-id")
        page.click("#models a[data-slug=background-eraser]")
        expect(page.locator("#model-title")).to_have_text("background-eraser")
        expect(page.locator("#run")).to_be_enabled()
        expect(page.locator("#cancel")).to_be_hidden()
        deadline = time.monotonic() + 20
        while (status := httpx.get(f"{base_url}/v2/requests/{request_id}/status").json()["status"]) != "CANCELED":
            assert time.monotonic() < deadline, f"the run left behind is {status}, not cancelled"
            time.sleep(0.2)
        expect(page.locator("#result-stage")).to_have_class(re.compile(r"\bempty\b"))
        expect(page.locator("#error")).to_be_hidden()


def test_a_mask_file_is_used_when_nothing_is_painted(serve_retouch, new_page, tmp_path):
    source = tmp_path / "bar.png"
    original = photo_with_a_red_bar(source)
    mask = np.zeros(original.shape[:2], np.uint8)
    mask[218:262, 190:450] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    with serve_retouch() as base_url:
        page = new_page()
        open_playground(page, base_url, "magic-eraser")
        page.set_input_files("#field-image", str(source))
        page.set_input_files("#field-mask", str(tmp_path / "mask.png"))
        expect(page.locator("fieldset[data-field=mask] .chosen")).to_contain_text("mask.png (640 × 480)")
        page.select_option("#field-output_format", "png")
        run_and_wait(page)
        result = shown_image(page, "#result-image")
        assert reddish(result[RED_BAR][..., :3]).mean() < 0.05
        # grow_mask (10 by default) widens the hole: beyond that, nothing changed.
        untouched = cv2.dilate(mask, np.ones((25, 25), np.uint8)) == 0
        assert np.array_equal(result[untouched][..., :3], original[untouched])


def test_a_second_finger_does_not_join_the_stroke(serve_retouch, new_page, tmp_path):
    source = tmp_path / "bar.png"
    photo_with_a_red_bar(source)
    with serve_retouch() as base_url:
        page = new_page(mobile=True)
        open_playground(page, base_url, "magic-eraser")
        page.set_input_files("#field-image", str(source))
        canvas = page.locator("#paint-canvas")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        session = page.context.new_cdp_session(page)

        def fingers(share_y: float) -> list[dict[str, float]]:
            y = box["y"] + box["height"] * share_y
            return [
                {"x": box["x"] + box["width"] * 0.1, "y": y, "radiusX": 2, "radiusY": 2, "force": 1, "id": 1},
                {"x": box["x"] + box["width"] * 0.9, "y": box["y"] + box["height"] - (y - box["y"]), "radiusX": 2, "radiusY": 2, "force": 1, "id": 2},
            ]

        session.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": fingers(0.2)})
        for share in (0.3, 0.4, 0.5, 0.6):
            session.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": fingers(share)})
        session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        coverage = page.locator("#mask-coverage")
        expect(coverage).to_have_text(re.compile(r"^\d+\.\d % selected$"))
        # One finger's vertical stroke over 40 % of the height: a band joining both fingers would cover far more.
        assert float(coverage.text_content().split()[0]) < 12
