"""Screenshots of what the Prefect UI shows for restorekit, taken with headless Chromium.

Not part of the pytest suite (the name does not start with ``test_``). Run it from the repo root,
as root (the clusters run as the ``postgres`` OS user), with Debian's chromium installed
(``apt-get update && apt-get install -y chromium``):

    .venv/bin/python tests/ui/screenshot_ui.py            # PNGs into tests/ui/screenshots/

It builds the embedded default installation (a "production" cluster with sample data at scale
0.02, WAL archiving into a local repository, a base backup) in a temporary directory, starts a
Prefect server (SQLite), registers every deployment (deployments/deploy.py: deploy_all), runs
one restore drill directly, then has ``chromium`` take, in each of the server's two UIs
(``v1-*``: the classic UI at /, ``v2-*``: the new one under /v2/, the one "/" opens by default):

* ``run-form-complete-failure.png``: the run form ("Run > Custom run") of the
  complete-failure/production deployment: the typed CompleteFailureParams form with the
  deployment's defaults;
* ``drill-report.png``: the drill-report-production markdown artifact;
* ``drill-history.png``: the drill-history-production table artifact;
* ``flow-runs.png``: the flow runs list (/runs).

Everything it started (clusters, the Prefect server, its temporary directory) is stopped and
removed at the end, also when a step fails.

Chromium is driven in one of three ways (``--driver``):

* ``cdp`` (the default): over the DevTools protocol with ``websockets``, which Prefect already
  depends on: waits until each page shows its own text (e.g. "Lock Wait Seconds"), then 2 s
  more for the route's fade-in, then captures it (see CdpShooter). Nothing else to install.
* ``cli``: the plain ``chromium --headless=new --screenshot --dump-dom`` command line with
  ``--virtual-time-budget`` (see CliShooter). Checks the dumped DOM for the page's text, but
  can catch the classic UI mid fade-in (a dimmed page): look at the PNGs.
* ``playwright``: Python playwright, which is not a project dependency: install it outside the
  project venv, e.g. ``.venv/bin/python -m pip install --target /tmp/pw-site playwright``, run
  the script with ``PYTHONPATH=/tmp/pw-site``, and never run ``playwright install`` (it
  downloads browsers): the script launches ``/usr/bin/chromium`` itself.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # flows/, tasks/, deployments/ when run as a plain script

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402

from restorekit.pg.tools import default_os_user, make_dir  # noqa: E402

CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium"
WINDOW = (1400, 1000)
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--force-device-scale-factor=1",
]
MAX_PNG_BYTES = 400 * 1024

console = Console(stderr=True)


# -- Chromium --------------------------------------------------------------------------------------


def find_chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        console.print(f"[red]Debian's chromium is not installed.[/] As root: {CHROMIUM_INSTALL}")
        raise SystemExit(2)
    return path


class CliShooter:
    """One ``chromium --headless=new --screenshot --dump-dom`` process per page.

    ``--virtual-time-budget`` lets the JavaScript app fetch from the API and render before the
    shot; the DOM dumped by the same run must contain ``wait_for`` (the page's own text), else
    the shot is retried once with twice the budget and then fails, rather than keeping a blank
    page or a spinner.
    """

    name = "cli"

    def __init__(self, chromium: str, work: Path, budget_ms: int = 15000) -> None:
        self.chromium = chromium
        self.work = work
        self.budget_ms = budget_ms

    def shot(self, url: str, out: Path, wait_for: str | None = None,
             height: int = WINDOW[1]) -> None:
        for budget in (self.budget_ms, 2 * self.budget_ms):
            out.unlink(missing_ok=True)
            profile = tempfile.mkdtemp(prefix="chromium-", dir=self.work)
            cmd = [self.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--window-size={WINDOW[0]},{height}", f"--virtual-time-budget={budget}",
                   f"--screenshot={out}", "--dump-dom", url]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
            shutil.rmtree(profile, ignore_errors=True)
            if proc.returncode != 0 or not out.exists():
                raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
            if wait_for is None or wait_for in proc.stdout:
                return
            console.print(f"[yellow]{url}: {wait_for!r} not rendered within {budget} ms[/]")
        raise RuntimeError(f"{url} did not render {wait_for!r}; see {out}")

    def close(self) -> None:
        pass


class CdpShooter:
    """Chromium driven over the DevTools protocol with ``websockets`` (a Prefect dependency).

    Like playwright, with nothing to install: open the page, wait until its own text
    (``wait_for``) is in ``document.body.innerText``, let route transitions and charts settle
    for a moment of real time (the classic UI fades each route in), then capture the viewport.
    """

    name = "cdp"

    def __init__(self, chromium: str, work: Path) -> None:
        from websockets.sync.client import connect

        profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=work))
        self._proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        self._ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30)
        self._next_id = 0

    def _call(self, method: str, session: str | None = None, **params: object) -> dict:
        self._next_id += 1
        message: dict[str, object] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        while True:  # events arrive in between: skip them
            reply = json.loads(self._ws.recv(timeout=60))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]

    def shot(self, url: str, out: Path, wait_for: str | None = None,
             height: int = WINDOW[1]) -> None:
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        try:
            self._call("Emulation.setDeviceMetricsOverride", session, width=WINDOW[0],
                       height=height, deviceScaleFactor=1, mobile=False)
            self._call("Page.navigate", session, url=url)
            check = ("document.body !== null && document.body.innerText.includes("
                     f"{json.dumps(wait_for or '')})")
            deadline = time.monotonic() + 60
            while not self._call("Runtime.evaluate", session, expression=check,
                                 returnByValue=True)["result"].get("value"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not render {wait_for!r} within 60 s")
                time.sleep(0.25)
            time.sleep(2)  # route fade-in, charts, web fonts
            data = self._call("Page.captureScreenshot", session, format="png")["data"]
            out.write_bytes(base64.b64decode(data))
        finally:
            self._call("Target.closeTarget", targetId=target)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()


class PlaywrightShooter:
    """Python playwright driving the system Chromium (never ``playwright install``)."""

    name = "playwright"

    def __init__(self, chromium: str, work: Path) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS,
                                                 headless=True)
        self._context = self._browser.new_context(device_scale_factor=1)

    def shot(self, url: str, out: Path, wait_for: str | None = None,
             height: int = WINDOW[1]) -> None:
        page = self._context.new_page()
        page.set_viewport_size({"width": WINDOW[0], "height": height})
        try:
            page.goto(url, wait_until="networkidle", timeout=60_000)
            if wait_for:
                page.get_by_text(wait_for, exact=False).first.wait_for(timeout=30_000)
            with contextlib.suppress(Exception):
                page.wait_for_load_state("networkidle", timeout=10_000)
            page.wait_for_timeout(1500)  # charts and fonts settle
            page.screenshot(path=str(out))
        finally:
            page.close()

    def close(self) -> None:
        self._context.close()
        self._browser.close()
        self._pw.stop()


def make_shooter(driver: str, chromium: str,
                 work: Path) -> CdpShooter | CliShooter | PlaywrightShooter:
    if driver == "playwright":
        try:
            return PlaywrightShooter(chromium, work)
        except ImportError:
            raise SystemExit("playwright is not importable: see this script's docstring "
                             "(and do NOT run `playwright install`)") from None
    if driver == "cli":
        return CliShooter(chromium, work)
    return CdpShooter(chromium, work)


def shrink(png: Path) -> None:
    """Keep each PNG under 400 KB: quantize with Pillow if it is there and the file is large."""
    if png.stat().st_size <= MAX_PNG_BYTES:
        return
    with contextlib.suppress(ImportError):
        from PIL import Image

        with Image.open(png) as img:
            img.convert("RGB").quantize(colors=128).save(png, optimize=True)
    if png.stat().st_size > MAX_PNG_BYTES:
        console.print(f"[yellow]warning[/]: {png.name} is {png.stat().st_size // 1024} KB")


# -- restorekit + Prefect --------------------------------------------------------------------------


@contextlib.contextmanager
def installation(work: Path, scale: float) -> Iterator[tuple[object, str]]:
    """The production installation and a Prefect server; yields (installation, UI URL)."""
    from restorekit.demo import build_installation, start_prefect_server, teardown_installation

    inst = None
    pid = None
    try:
        console.print(f"[bold]Building production[/] (scale {scale}) under {work}")
        inst = build_installation(work / "install", scale=scale)
        ui_url, pid = start_prefect_server(work, console)
        yield inst, ui_url
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        if inst is not None:
            teardown_installation(inst)  # type: ignore[arg-type]
        elif (work / "install" / "restorekit.toml").exists():
            from restorekit.demo import stop_demo  # a build that failed half-way

            with contextlib.suppress(Exception):
                stop_demo(work, console)


def deploy_and_drill(config: Path) -> None:
    from deployments.deploy import deploy_all
    from flows.restore_drill import DrillFailed, RestoreDrillParams, restore_drill
    from restorekit.config import load_settings

    planned = deploy_all(load_settings(config), str(config))
    console.print("deployed: " + ", ".join(p.name for p in planned if p.name != "automation"))
    try:
        results = restore_drill(RestoreDrillParams(config=str(config)))
    except DrillFailed as exc:  # its report artifact says why: photograph it all the same
        console.print(f"[red]the drill failed[/]: {exc}")
        return
    for r in results:
        console.print(f"drill of {r.target}: passed={r.passed}, RTO {r.rto_seconds:.1f} s")


def lookup_ids(api: str) -> dict[str, str]:
    with httpx.Client(base_url=api, timeout=30) as client:
        dep = client.get("/deployments/name/complete-failure/production")
        dep.raise_for_status()
        ids = {"deployment": dep.json()["id"]}
        for key in ("drill-report-production", "drill-history-production"):
            found = client.post("/artifacts/filter", json={
                "artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1})
            found.raise_for_status()
            (artifact,) = found.json()
            ids[key] = artifact["id"]
    return ids


# The server serves the classic UI ("v1", Vue) at / and the new one ("v2", React) under /v2/.
# Deep links under / stay on v1; only "/" itself redirects to the default UI, which is v2 unless
# PREFECT_SERVER_UI_V2_ENABLED=false. Both have the same routes below their base.
UI_BASE = {"v1": "", "v2": "/v2"}


def pages(ids: dict[str, str]) -> list[tuple[str, str, str, int]]:
    """(file name, route, text to wait for, window height) of every screenshot."""
    return [
        ("run-form-complete-failure.png", f"/deployments/deployment/{ids['deployment']}/run",
         "Lock Wait Seconds", 1640),
        ("drill-report.png", f"/artifacts/artifact/{ids['drill-report-production']}",
         "Restore drill: production", WINDOW[1]),
        ("drill-history.png", f"/artifacts/artifact/{ids['drill-history-production']}",
         "rto_s", 700),
        ("flow-runs.png", "/runs", "restore-drill", WINDOW[1]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    parser.add_argument("--scale", type=float, default=0.02)
    parser.add_argument("--ui", choices=["v1", "v2", "both"], default="both",
                        help="which of the server's two UIs to photograph")
    parser.add_argument("--driver", choices=["cdp", "cli", "playwright"], default="cdp",
                        help="how to drive chromium (see the docstring)")
    args = parser.parse_args(argv)

    chromium = find_chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="restorekit-ui-"))
    make_dir(work, default_os_user(), mode=0o755)
    written: list[Path] = []
    try:
        with installation(work, args.scale) as (inst, ui_url):
            from prefect.settings import PREFECT_API_URL, temporary_settings

            api = f"{ui_url}/api"
            with temporary_settings(updates={PREFECT_API_URL: api}):
                deploy_and_drill(inst.config)  # type: ignore[attr-defined]
            ids = lookup_ids(api)
            shooter = make_shooter(args.driver, chromium, work)
            console.print(f"[bold]Screenshots[/] with {shooter.name} ({chromium}) of {ui_url}")
            try:
                for ui in (["v1", "v2"] if args.ui == "both" else [args.ui]):
                    base = ui_url + UI_BASE[ui]
                    for name, path, wait_for, height in pages(ids):
                        out = args.out / f"{ui}-{name}"
                        shooter.shot(base + path, out, wait_for=wait_for, height=height)
                        shrink(out)
                        written.append(out)
                        console.print(f"  {out} ({out.stat().st_size // 1024} KB) <- "
                                      f"{UI_BASE[ui]}{path}")
            finally:
                shooter.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for png in written:
        print(f"{png.relative_to(REPO) if png.is_relative_to(REPO) else png}\t"
              f"{png.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
