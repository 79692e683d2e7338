"""Render each UI workflow in ComfyUI's real frontend and save what a user sees on opening it as the template's
thumbnail (``workflows/<name>.jpg``, the file ComfyUI's template browser shows for a custom node's template).

    python workflows/render_thumbnails.py --url http://127.0.0.1:8188 [--chromium /usr/bin/chromium] [--check]

Needs a running ComfyUI with this pack installed, Chromium, and the Python packages playwright and Pillow (not
requirements of the pack). Each workflow is loaded with ``app.loadGraphData``; the render fails when the frontend
reports a node type it does not know (a missing node), which is the same check a user would make by eye.
``--check`` renders and checks but writes nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VIEWPORT = {"width": 1600, "height": 900}
THUMBNAIL = (640, 360)
CANVAS = (64, 80, 1600, 900)  # the graph canvas in the screenshot, without the side bar and tabs
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
FRONTEND_ONLY = {"Note", "MarkdownNote"}


def render(url: str, chromium: str, names: list[str]) -> dict[str, tuple[bytes, list[str]]]:
    """name -> (PNG of the canvas, node types the frontend does not know)."""
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url, wait_until="networkidle", timeout=120_000)
        page.wait_for_function("() => window.app && window.app.graph", timeout=120_000)
        page.wait_for_timeout(2000)
        page.keyboard.press("Escape")  # the template browser opens on a first visit
        for name in names:
            workflow = json.loads((HERE / f"{name}.json").read_text())
            missing = page.evaluate(
                """async (wf) => {
                    await window.app.loadGraphData(wf);
                    return wf.nodes.map(n => n.type).filter(t => !window.LiteGraph.registered_node_types[t]);
                }""",
                workflow,
            )
            page.wait_for_timeout(1000)
            out[name] = (page.screenshot(), [t for t in missing if t not in FRONTEND_ONLY])
        browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188", help="a running ComfyUI with the pack")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--check", action="store_true", help="render and check only; write no thumbnails")
    args = parser.parse_args(argv)
    from PIL import Image

    names = sorted(p.stem for p in HERE.glob("*.json"))
    failed = False
    for name, (png, missing) in render(args.url, args.chromium, names).items():
        if missing:
            print(f"{name}: the frontend does not know {sorted(set(missing))}", file=sys.stderr)
            failed = True
            continue
        if not args.check:
            image = Image.open(io.BytesIO(png)).convert("RGB").crop(CANVAS)
            image.thumbnail(THUMBNAIL)
            image.save(HERE / f"{name}.jpg", quality=85)
        print(f"{name}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
