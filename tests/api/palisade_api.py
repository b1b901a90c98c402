"""Helpers and fixtures of the end-to-end API tests (conftest.py re-exports
the fixtures): a freshly started `palisade serve` on a free 127.0.0.1 port
with a temporary data directory, and clients of the real Tencent Cloud
Python SDK pointed at it.

The store: SQLite in the data directory by default. With
`PALISADE_STORE=postgres://USER:PASSWORD@HOST:PORT/DB` (a role that may create
databases) every data directory gets a fresh PostgreSQL database of its own
instead, so the same tests run against both stores (scripts/test.sh runs
them twice)."""

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
from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.cvm.v20170312 import cvm_client
from tencentcloud.cvm.v20170312 import models as cvm_models
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312 import vpc_client

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("PALISADE_BIN", str(REPO / "target" / "debug" / "palisade"))
REGION = "ap-guangzhou"
PG_BASE = os.environ.get("PALISADE_STORE", "")
if PG_BASE and not PG_BASE.startswith(("postgres://", "postgresql://")):
    raise RuntimeError(f"PALISADE_STORE must be a postgres:// URL, not {PG_BASE!r}")
_pg_databases = {}


def scratch_database(base=PG_BASE):
    """Creates an empty database on the server of `base`; returns its URL."""
    import uuid

    name = "palisade_py_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", base, "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True)
    head, _, query = base.partition("?")
    scheme, _, rest = head.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


def store_url(data_dir):
    """The --store URL of the server whose data directory is `data_dir`
    (None for SQLite, the default): one database per data directory, kept
    across restarts of that server."""
    if not PG_BASE:
        return None
    key = str(Path(data_dir).resolve())
    if key not in _pg_databases:
        _pg_databases[key] = scratch_database()
    return _pg_databases[key]


def store_args(data_dir):
    """`--data-dir DIR` plus `--store URL` when the tests run on PostgreSQL:
    for `serve` and the `account` commands."""
    url = store_url(data_dir)
    return ["--data-dir", str(data_dir)] + (["--store", url] if url else [])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `palisade serve` process."""

    def __init__(self, data_dir, port=None, store=None, args=()):
        self.data_dir = Path(data_dir)
        # `args`: more `serve` options (e.g. --strict-signatures).
        self.args = list(args)
        # `store`: a --store URL shared with other servers (default: this
        # data directory's own store).
        self.store = store or store_url(self.data_dir)
        self.port = port or free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.log_path = self.data_dir.parent / f"serve-{self.port}.log"
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", self.endpoint, "--data-dir", str(self.data_dir),
             *(["--store", self.store] if self.store else []), *self.args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"palisade serve exited: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("palisade serve did not start listening")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def admin_credentials(self):
        return json.loads((self.data_dir / "admin-credentials.json").read_text())

    def create_account(self, name):
        out = subprocess.run(
            [BIN, "account", "create", name, "--data-dir", str(self.data_dir),
             *(["--store", self.store] if self.store else []), "--output", "json"],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout)


class Api:
    """Real SDK clients for one account."""

    def __init__(self, server, creds):
        self.creds = creds
        self.cred = credential.Credential(creds["SecretId"], creds["SecretKey"])
        self.endpoint = server.endpoint
        self.vpc = vpc_client.VpcClient(self.cred, REGION, profile(server.endpoint))
        self.cvm = cvm_client.CvmClient(self.cred, REGION, profile(server.endpoint))
        self.pal = CommonClient("palisade", "2026-11-01", self.cred, REGION, profile(server.endpoint))

    def v(self, action, params=None):
        """Calls a VPC action through the SDK's typed request/response models."""
        return typed(self.vpc, vpc_models, action, params or {})

    def c(self, action, params=None):
        """Calls a CVM action through the SDK's typed models."""
        return typed(self.cvm, cvm_models, action, params or {})

    def p(self, action, params=None):
        """Calls a `palisade` service action through the SDK's CommonClient."""
        return self.pal.call_json(action, params or {})["Response"]

    def rules(self, sg):
        return self.v("DescribeSecurityGroupPolicies", {"SecurityGroupId": sg})["SecurityGroupPolicySet"]

    def group(self, name="g", **extra):
        params = {"GroupName": name, "GroupDescription": f"{name} desc"}
        params.update(extra)
        return self.v("CreateSecurityGroup", params)["SecurityGroup"]["SecurityGroupId"]


def profile(endpoint):
    return ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=endpoint))


def typed(client, models, action, params):
    req = getattr(models, action + "Request")()
    req.from_json_string(json.dumps(params))
    resp = getattr(client, action)(req)
    return json.loads(resp.to_json_string())


def error_code(fn, *args, **kwargs):
    """Runs a call that must fail; returns the Tencent error code."""
    try:
        fn(*args, **kwargs)
    except TencentCloudSDKException as e:
        assert e.get_request_id(), "errors carry a RequestId"
        return e.get_code()
    raise AssertionError("the call succeeded but should have failed")


@pytest.fixture(scope="session")
def server():
    tmp = tempfile.mkdtemp(prefix="palisade-api-")
    srv = Server(Path(tmp) / "data").start()
    yield srv
    srv.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def admin(server):
    return Api(server, server.admin_credentials())


@pytest.fixture()
def fresh(server, request):
    """A new account per test, so limits and listings start empty."""
    name = "t-" + request.node.name[:40].replace("[", "-").replace("]", "") + "-" + str(time.time_ns())[-6:]
    return Api(server, server.create_account(name))
