"""The lab as a learner uses it: `make lab`'s JupyterLab in headless Chromium.

`make test-browser` runs this module (it is not part of `make test`). It starts the server
`make lab` starts (the command is read from `make -n lab`) on a free port with a token made
here, then, as a learner would, opens notebooks in the browser, picks Run > Run All Cells and
reads what the page shows: every code cell ran, no cell shows an exception, the diagrams and
the plots are pictures the browser could load. A full-page screenshot of each notebook lands in
build/browser/, with the server's log.

The lab never writes the repository's notebooks: autosave is off (in a settings folder of its
own, so the user's JupyterLab settings and workspaces are untouched too), the page cannot
send a save to the server, and checkpoints the lab creates on opening are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "browser"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))  # the system's Chromium
VIEWPORT = {"width": 1280, "height": 900}
SCREENSHOT_MAX_HEIGHT = 60_000
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 900  # one notebook, Run All Cells, on a busy 2-core machine
# The course's helpers that draw a figure: a cell that calls one must show a picture.
DRAWS = re.compile(r"\b(plot_timeline|display_example_images|visualize_predictions|show_grid)\(")
MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]+\)|<img\s")

# How JupyterLab 4 renders an exception: an output of mime type application/vnd.jupyter.stderr,
# like any stderr text (a warning), so the text tells them apart. IPython starts an error with a
# line of dashes and "<Name>  Traceback (most recent call last)" (no colon, unlike a traceback
# a program prints), or, for a SyntaxError, with "Cell In[n], line m".
CELL_STATE_JS = r"""() => {
  const error = new RegExp(
    String.raw`^(-{20,}\n\S[^\n]*Traceback \(most recent call last\)\n` +
    String.raw`|\s*Cell In\[\d+\], line \d+\n)`);
  const cells = [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')];
  const indicator = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
  return {
    kernel: indicator ? indicator.dataset.status : null,
    cells: cells.flatMap((cell, index) => {
      if (!cell.classList.contains('jp-CodeCell')) return [];
      const prompt = cell.querySelector('.jp-InputPrompt');
      const line = cell.querySelector('.cm-line');
      const stderr = [...cell.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
        .map(output => output.textContent);
      const errors = stderr.filter(text => error.test(text));
      const images = [...cell.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="image/png"] img')];
      return [{
        index,
        prompt: prompt ? prompt.textContent.trim() : '',
        line: line ? line.textContent : '',
        stderr: stderr.length,
        errors,
        images: images.length,
        loaded: images.filter(img => img.complete && img.naturalWidth > 0).length,
      }];
    }),
  };
}"""

MARKDOWN_IMAGES_JS = r"""() => [...document.querySelectorAll(
    '.jp-NotebookPanel .jp-MarkdownCell .jp-RenderedMarkdown img')].map(img => ({
  src: new URL(img.src).pathname,
  complete: img.complete,
  width: img.naturalWidth,
}))"""


@dataclass
class Lab:
    """A running JupyterLab server: its address, its token and its log."""

    url: str
    token: str
    log: Path

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """A request to the server's REST API with the token."""
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kwargs)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Opened:
    """A notebook open in the page, with what to undo on the server when the test ends."""

    path: str
    checkpoints_before: set[str]
    folder_had_checkpoints: bool
    blocked_writes: list[str] = field(default_factory=list)


def make_lab_command() -> list[str]:
    """The command `make lab` runs (so the test follows any change to it), without running it."""
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "lab"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line for line in dry_run.splitlines() if re.search(r"\bjupyter lab\b", line)]
    assert len(lines) == 1, f"expected one `jupyter lab` command in `make -n lab`:\n{dry_run}"
    return shlex.split(lines[0])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lab_settings(folder: Path) -> None:
    """JupyterLab settings for the test: no autosave (the committed notebooks stay as they
    are) and no question about Jupyter news (a pop-up over the page)."""
    settings = {
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
    }
    for plugin, values in settings.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def stop_server(lab: Lab, server: subprocess.Popen) -> None:
    """Shut every kernel down (Ray with it), then the server; kill it if it does not stop."""
    if server.poll() is None:
        try:
            for session in lab.api("GET", "api/sessions").json():
                lab.api("DELETE", f"api/sessions/{session['id']}")
            lab.api("POST", "api/shutdown")
            server.wait(timeout=60)
        except (requests.RequestException, subprocess.TimeoutExpired):
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """`make lab`'s server on a free port, with a token made here; always stopped at the end."""
    OUT.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    port = free_port()
    command = [
        *make_lab_command(),
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
    ]
    with tempfile.TemporaryDirectory(prefix="lab-test-") as state:
        state = Path(state)
        lab_settings(state / "settings")
        env = {
            **os.environ,
            "COURSE_NUM_IMAGES": "4",  # quick notebooks
            "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        }
        log = OUT / "jupyter.log"
        with log.open("w") as log_file:
            server = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        running = Lab(url=f"http://127.0.0.1:{port}/", token=token, log=log)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if server.poll() is not None:
                    pytest.fail(
                        f"JupyterLab exited with code {server.returncode} on start "
                        f"({shlex.join(command[:-1])} --IdentityProvider.token=...):\n"
                        f"{running.log_tail()}"
                    )
                try:
                    if requests.get(running.url + "api", timeout=5).ok:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not answer in {START_TIMEOUT_S} s:\n{running.log_tail()}"
                    )
                time.sleep(0.5)
            yield running
        finally:
            stop_server(running, server)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system (Playwright's own download is not used)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: run `make test-browser`"
    )
    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install it (Debian/Ubuntu: `sudo apt-get install "
            "chromium`) or run `make test-browser`, which does so as root",
            pytrace=False,
        )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(60_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def open_notebook(lab, page) -> Iterator:
    """Open notebooks in the page; afterwards shut their kernels down and delete the
    checkpoints the lab made on opening them."""
    opened: list[Opened] = []

    def open_(path: str) -> Opened:
        had_folder = (ROOT / Path(path).parent / ".ipynb_checkpoints").exists()
        before = lab.api("GET", f"api/contents/{path}/checkpoints").json()  # makes the folder
        notebook = Opened(path, {c["id"] for c in before}, had_folder)
        opened.append(notebook)

        def refuse_writes(route) -> None:
            # Opening a notebook creates a checkpoint (POST .../checkpoints); anything else
            # that is not a read (a save, a rename, a new file) is refused.
            request = route.request
            if request.method == "GET" or (
                request.method == "POST" and request.url.split("?")[0].endswith("/checkpoints")
            ):
                route.continue_()
            else:
                notebook.blocked_writes.append(f"{request.method} {request.url}")
                route.abort()

        page.route("**/api/contents/**", refuse_writes)
        # A workspace of its own, so the page opens this notebook only (a workspace would
        # reopen the notebooks of the tests before).
        workspace = f"test-{secrets.token_hex(4)}"
        page.goto(f"{lab.url}lab/workspaces/{workspace}/tree/{path}?token={lab.token}")
        cells = len(json.loads((ROOT / path).read_text())["cells"])
        page.wait_for_function(
            f"() => document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length >= {cells}"
        )
        panels = page.locator(".jp-NotebookPanel").count()
        assert panels == 1, f"{path}: the page shows {panels} notebooks, one was expected"
        wait_for_idle_kernel(lab, page, path)
        return notebook

    yield open_
    page.context.close()  # first: an open page would recreate what is deleted below
    for session in lab.api("GET", "api/sessions").json():  # every kernel the page started
        lab.api("DELETE", f"api/sessions/{session['id']}")
    for notebook in opened:
        for checkpoint in lab.api("GET", f"api/contents/{notebook.path}/checkpoints").json():
            if checkpoint["id"] not in notebook.checkpoints_before:
                lab.api("DELETE", f"api/contents/{notebook.path}/checkpoints/{checkpoint['id']}")
        folder = ROOT / Path(notebook.path).parent / ".ipynb_checkpoints"
        if not notebook.folder_had_checkpoints and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def wait_for_idle_kernel(lab: Lab, page, path: str) -> None:
    """Wait until the notebook's kernel has started and is idle, on the server and in the page."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        states = [
            s["kernel"]["execution_state"]
            for s in lab.api("GET", "api/sessions").json()
            if s["path"] == path
        ]
        if states == ["idle"] and page.evaluate(CELL_STATE_JS)["kernel"] == "idle":
            return
        time.sleep(0.5)
    pytest.fail(f"{path}: the kernel did not start in {START_TIMEOUT_S} s:\n{lab.log_tail()}")


def run_all_cells(page, path: str) -> dict:
    """Run > Run All Cells, as a learner does; return the cells' state once the run has ended
    (no cell queued or running, the kernel idle), whether it finished or stopped at an error."""
    state = {"cells": []}
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    settled = 0
    while time.monotonic() < deadline:
        time.sleep(1)
        state = page.evaluate(CELL_STATE_JS)
        prompts = [cell["prompt"] for cell in state["cells"]]
        started = any(prompt not in ("[ ]:", "") for prompt in prompts)
        busy = any("*" in prompt for prompt in prompts) or state["kernel"] != "idle"
        settled = settled + 1 if started and not busy else 0
        if settled == 3:  # the end of a run, not a pause between two cells
            break
    else:
        running = [c for c in state["cells"] if "*" in c["prompt"]]
        pytest.fail(
            f"{path}: Run All Cells did not finish in {RUN_TIMEOUT_S} s; still running: "
            + "; ".join(f"cell {c['index']} ({c['line']!r})" for c in running[:3])
        )
    # A cell whose code is hidden (a collapsed "Why" cell) shows no prompt: show every cell's
    # code, as View > Expand All Code does for a learner, to read every execution count.
    page.get_by_role("menuitem", name="View", exact=True).click()
    page.get_by_role("menuitem", name="Expand All Code", exact=True).click()
    page.wait_for_function(
        "() => !document.querySelector('.jp-NotebookPanel .jp-InputPlaceholder')"
    )
    return page.evaluate(CELL_STATE_JS)


def problems_in(state: dict) -> list[str]:
    """What a learner would see go wrong: an exception in a cell, a cell that did not run."""
    found = [
        f"cell {cell['index']} {cell['prompt']} ({cell['line']!r}) shows an error:\n{text.strip()}"
        for cell in state["cells"]
        for text in cell["errors"]
    ]
    not_run = [c for c in state["cells"] if not re.fullmatch(r"\[\d+\]:", c["prompt"])]
    if not_run:
        found.append(
            f"{len(not_run)} code cell(s) have no execution count, the first: cell "
            f"{not_run[0]['index']} ({not_run[0]['line']!r})"
        )
    return found


def screenshot(page, name: str) -> Path:
    """The whole notebook in one picture: the notebook scrolls inside the page, so the page is
    made as tall as the notebook first (a plain full-page screenshot shows one screen)."""
    path = OUT / f"{name}.png"
    for _ in range(6):  # cells measured once visible change the height; let it settle
        notebook, shown, window = page.evaluate(
            """() => {
              const outer = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
              const cells = outer.querySelectorAll('.jp-Cell');
              outer.scrollTop = 0;
              const bottom = cells[cells.length - 1].getBoundingClientRect().bottom;
              return [bottom - outer.getBoundingClientRect().top, outer.clientHeight,
                      window.innerHeight];
            }"""
        )
        wanted = min(window - shown + round(notebook) + 100, SCREENSHOT_MAX_HEIGHT)
        if abs(wanted - window) < 50:
            break
        page.set_viewport_size({"width": VIEWPORT["width"], "height": wanted})
        page.wait_for_timeout(1000)
    page.screenshot(path=path, full_page=True)
    page.set_viewport_size(VIEWPORT)
    return path


def check_markdown_images(page, path: str) -> list[str]:
    """Every picture in the notebook's text (a diagram) loaded in the browser."""
    source = json.loads((ROOT / path).read_text())["cells"]
    expected = sum(
        len(MARKDOWN_IMAGE.findall("".join(c["source"])))
        for c in source
        if c["cell_type"] == "markdown"
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-NotebookPanel .jp-MarkdownCell img')]"
        ".every(img => img.complete)"
    )
    images = page.evaluate(MARKDOWN_IMAGES_JS)
    found = []
    if len(images) != expected:
        found.append(f"the text has {expected} image(s), the page shows {len(images)}")
    broken = [image["src"] for image in images if image["width"] == 0]
    if broken:
        found.append(
            f"{len(broken)} picture(s) in the text did not load (jupyter.log says why): {broken}"
        )
    return found


def check_plots(page, path: str, state: dict) -> list[str]:
    """Every cell that calls one of the course's drawing helpers shows a loaded picture."""
    code = [
        "".join(c["source"])
        for c in json.loads((ROOT / path).read_text())["cells"]
        if c["cell_type"] == "code"
    ]
    assert len(code) == len(state["cells"]), f"{path}: the page shows another number of cells"
    drawing = [cell for cell, source in zip(state["cells"], code) if DRAWS.search(source)]
    assert drawing, f"{path}: no cell draws a figure; is DRAWS out of date?"
    return [
        f"cell {cell['index']} ({cell['line']!r}) shows {cell['loaded']} loaded picture(s) "
        f"of {cell['images']}"
        for cell in drawing
        if cell["loaded"] < max(cell["images"], 1)
    ]


def test_the_server_refuses_a_request_without_the_token(lab):
    assert requests.get(lab.url + "api/contents", timeout=30).status_code == 403
    wrong = {"Authorization": "token " + secrets.token_urlsafe(24)}
    assert requests.get(lab.url + "api/contents", headers=wrong, timeout=30).status_code == 403
    assert lab.api("GET", "api/contents").status_code == 200


# The solution copy of notebook 02: the learner's copy stops at an exercise stub on purpose.
# Paths in the lab, whose root is the repository (as `make lab` starts it).
@pytest.mark.parametrize(
    "path", ["notebooks/00_overview.ipynb", "notebooks/solutions/02_ray_tasks.ipynb"]
)
def test_run_all_cells_in_the_lab(lab, page, open_notebook, path):
    notebook = open_notebook(path)
    state = run_all_cells(page, path)
    shot = screenshot(
        page, path.removeprefix("notebooks/").removesuffix(".ipynb").replace("/", "_")
    )
    problems = [
        *problems_in(state),
        *check_markdown_images(page, path),
        *check_plots(page, path, state),
    ]
    assert not notebook.blocked_writes, (
        f"{path}: the page tried to write: {notebook.blocked_writes}"
    )
    assert not problems, f"{path} in the lab (screenshot {shot.relative_to(ROOT)}):\n" + "\n".join(
        f"- {problem}" for problem in problems
    )


def test_an_exception_in_a_cell_is_reported_and_a_warning_is_not(lab, page, open_notebook):
    """The checks above can fail: cells added through the UI (never saved) before 00's first
    cell, a warning on stderr, then an exception that stops Run All Cells."""
    path = "notebooks/00_overview.ipynb"
    open_notebook(path)
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    for code in [
        "raise ValueError('a deliberate failure')",
        "import sys, warnings\nwarnings.warn('a warning')\nprint('text', file=sys.stderr)",
    ]:  # each goes above the last one added
        page.keyboard.press("Escape")
        page.keyboard.press("a")
        page.keyboard.press("Enter")
        page.keyboard.type(code)
    page.keyboard.press("Escape")
    state = run_all_cells(page, path)
    screenshot(page, "deliberate_failure")
    problems = problems_in(state)
    assert len(problems) == 2, problems
    assert problems[0].startswith('cell 1 [2]: ("raise ValueError'), problems[0]
    assert problems[0].endswith("ValueError: a deliberate failure"), problems[0]
    assert "have no execution count, the first: cell " in problems[1], problems[1]
    warned = state["cells"][0]
    assert warned["prompt"] == "[1]:" and warned["stderr"] and not warned["errors"], warned


def test_the_dashboard_asks_for_the_token_and_shows_the_cluster_with_it(page):
    """The dashboard the notebooks point to, as a learner opens it: the page asks for Ray's
    token, refuses a wrong one, and with the right one (`ray get-auth-token`) shows this node."""
    import logging

    import ray
    from helpers import ray_auth_token

    from utils.cluster import dashboard_url

    ray.init(address="local", num_cpus=1, logging_level=logging.ERROR)
    try:
        url = dashboard_url()
        assert url is not None, "no dashboard pages: is ray[default] installed?"
        node = ray.get_runtime_context().get_node_id()
        token = ray_auth_token()
        page.goto(url)
        dialog = page.get_by_text("Authentication Token Required")
        field_ = page.get_by_placeholder("Enter your authentication token")
        for attempt in (secrets.token_hex(32), token):
            dialog.wait_for()
            field_.fill(attempt)
            page.get_by_role("button", name="Submit").click()
            page.wait_for_timeout(2000)
            if attempt != token:
                assert dialog.is_visible(), "the dashboard accepted a wrong token"
        dialog.wait_for(state="hidden")
        page.get_by_text(node).first.wait_for(timeout=120_000)  # the autoscaler's node list
        OUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=OUT / "dashboard.png", full_page=True)
    finally:
        ray.shutdown()
