"""Operating the server: the admin credentials file, `palisade account
create` while the server runs, and durability of acknowledged writes across
`kill -9`."""

import json
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

from conftest import BIN, Api, Server, error_code


def test_admin_credentials_file(server):
    path = server.data_dir / "admin-credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = json.loads(path.read_text())
    assert set(creds) == {"AccountId", "SecretId", "SecretKey"}
    log = server.log_path.read_text()
    assert str(path) in "\n".join(log.splitlines()[:3]), "the first log lines say where the credentials are"
    assert creds["SecretKey"] not in log


def test_account_create_while_running(server):
    creds = server.create_account("carol")
    assert set(creds) == {"AccountId", "SecretId", "SecretKey"}
    api = Api(server, creds)
    assert api.v("DescribeSecurityGroups")["TotalCount"] == 0
    dup = subprocess.run([BIN, "account", "create", "carol", "--data-dir", str(server.data_dir)], capture_output=True, text=True)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    assert creds["SecretKey"] not in server.log_path.read_text()


def test_acknowledged_writes_survive_kill_9():
    tmp = Path(tempfile.mkdtemp(prefix="palisade-kill-"))
    srv = Server(tmp / "data").start()
    try:
        api = Api(srv, srv.admin_credentials())
        sg = api.group("durable")
        api.v("CreateSecurityGroupPolicies", {"SecurityGroupId": sg, "SecurityGroupPolicySet": {"Ingress": [{"Protocol": "TCP", "Port": "22", "CidrBlock": "10.0.0.0/8", "Action": "ACCEPT"}]}})
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.log.close()
        port = srv.port
        srv = Server(tmp / "data", port=port).start()
        api = Api(srv, srv.admin_credentials())
        s = api.rules(sg)
        assert s["Version"] == "1" and s["Ingress"][0]["Port"] == "22"
        # A restart does not recreate the admin account.
        assert "account `admin` exists" in srv.log_path.read_text()
        assert error_code(api.v, "DeleteSecurityGroup", {"SecurityGroupId": "sg-00000000"}) == "ResourceNotFound"
    finally:
        srv.stop()
