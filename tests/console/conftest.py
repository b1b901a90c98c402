"""Fixtures of the web console's browser tests (docs/console.md): a
`palisade serve` on a free 127.0.0.1 port, accounts made with
`palisade account create`, and headless Chromium driven through
chromedriver (Debian's `chromium` and `chromium-driver`) by Selenium.

Without Chromium, chromedriver or Selenium every test is skipped and says
why; when PALISADE_REQUIRE lists `browser` (or is `all`), as .ci/run sets
it, they fail instead. Each test saves a screenshot of its browsers' last
pages under PALISADE_TEST_OUTPUT (default target/test-output/console)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("PALISADE_BIN", str(REPO / "target" / "debug" / "palisade"))
OUT = Path(os.environ.get("PALISADE_TEST_OUTPUT", REPO / "target" / "test-output")) / "console"


def _required(need):
    names = [n.strip() for n in os.environ.get("PALISADE_REQUIRE", "").split(",")]
    return need in names or "all" in names


def _browser_missing():
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the Python package selenium is not installed (tests/requirements.txt)"
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser")):
        return "chromium is not installed (Debian package chromium)"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (Debian package chromium-driver)"
    return None


def need_browser():
    why = _browser_missing()
    if why:
        if _required("browser"):
            pytest.fail(f"PALISADE_REQUIRE lists browser, but {why}", pytrace=False)
        pytest.skip(f"browser tests skipped: {why}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConsoleServer:
    """A running `palisade serve`."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.data_dir = self.tmp / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.tmp / "serve.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir)],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"palisade serve exited: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("palisade serve did not start listening")
        while not (self.data_dir / "admin-credentials.json").exists():
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def admin(self):
        return json.loads((self.data_dir / "admin-credentials.json").read_text())

    def account(self, name):
        out = subprocess.run(
            [BIN, "account", "create", name, "--data-dir", str(self.data_dir), "--output", "json"],
            check=True, capture_output=True, text=True)
        return json.loads(out.stdout)

    def call(self, creds, service, action, params=None):
        """An API action as `creds`, through the Tencent SDK's CommonClient
        (as an agent or a script would call it); the `Response` object."""
        from tencentcloud.common import credential
        from tencentcloud.common.common_client import CommonClient
        from tencentcloud.common.profile.client_profile import ClientProfile
        from tencentcloud.common.profile.http_profile import HttpProfile

        version = {"vpc": "2017-03-12", "cvm": "2017-03-12", "palisade": "2026-11-01"}[service]
        profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=f"127.0.0.1:{self.port}"))
        client = CommonClient(service, version, credential.Credential(creds["SecretId"], creds["SecretKey"]),
                              "ap-guangzhou", profile)
        return client.call_json(action, params or {})["Response"]

    def apply(self, creds, fleet):
        """`palisade apply` of a fleet file with `creds`."""
        path = self.tmp / f"creds-{creds['SecretId']}.json"
        path.write_text(json.dumps(creds))
        subprocess.run(
            [BIN, "apply", "--server", self.url, "--credentials", str(path), "--auto-approve", str(fleet)],
            check=True, capture_output=True, text=True)


@pytest.fixture(scope="session")
def console_server():
    tmp = tempfile.mkdtemp(prefix="palisade-console-")
    srv = ConsoleServer(tmp)
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture()
def browsers(request):
    """Makes headless Chromium sessions (1280x800); at the end, saves a
    screenshot of each one's last page and closes it."""
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    made = []

    def make():
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1280,800", "--no-first-run", "--disable-extensions"):
            opts.add_argument(a)
        d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        d.implicitly_wait(0)
        made.append(d)
        return d

    yield make
    OUT.mkdir(parents=True, exist_ok=True)
    for n, d in enumerate(made):
        suffix = "" if n == 0 else f"-{n + 1}"
        try:
            d.save_screenshot(str(OUT / f"{request.node.name}{suffix}.png"))
        finally:
            d.quit()
