"""Operating the server: the admin credentials file, `palisade account
create` while the server runs, and durability of acknowledged writes across
`kill -9`."""

import json
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

from palisade_api import BIN, Api, Server, error_code, store_args


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
    dup = subprocess.run([BIN, "account", "create", "carol", *store_args(server.data_dir)], capture_output=True, text=True)
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
        shutil.rmtree(tmp, ignore_errors=True)


def test_https_with_tls_cert_and_key(tmp_path):
    import shutil

    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
    from tencentcloud.vpc.v20170312 import vpc_client

    from palisade_api import REGION, free_port, typed
    from tencentcloud.vpc.v20170312 import models as vpc_models
    from tencentcloud.common import credential

    if not shutil.which("openssl"):
        import pytest

        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    port = free_port()
    data = tmp_path / "data"
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", *store_args(data),
                             "--tls-cert", str(cert), "--tls-key", str(key)], stdout=log, stderr=subprocess.STDOUT)
    try:
        import socket
        import time

        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        creds = json.loads((data / "admin-credentials.json").read_text())
        prof = ClientProfile(httpProfile=HttpProfile(protocol="https", endpoint=f"127.0.0.1:{port}", certification=str(cert)))
        client = vpc_client.VpcClient(credential.Credential(creds["SecretId"], creds["SecretKey"]), REGION, prof)
        r = typed(client, vpc_models, "CreateSecurityGroup", {"GroupName": "tls", "GroupDescription": "over https"})
        assert r["SecurityGroup"]["SecurityGroupName"] == "tls"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        log.close()


def test_sigterm_ends_pending_long_polls():
    """A graceful stop does not wait out agents' long-polls."""
    import threading
    import time

    tmp = Path(tempfile.mkdtemp(prefix="palisade-term-"))
    srv = Server(tmp / "data").start()
    try:
        api = Api(srv, srv.admin_credentials())
        ins = api.p("RegisterInstances", {"Instances": [{"PrivateIpAddresses": ["10.0.0.1"]}]})["InstanceIdSet"][0]
        rev = api.p("DescribeInstanceRuleset", {"InstanceId": ins})["Ruleset"]["Revision"]
        answers = []
        t = threading.Thread(target=lambda: answers.append(api.p("DescribeInstanceRuleset", {"InstanceId": ins, "AfterRevision": rev, "WaitSeconds": 45})))
        t.start()
        time.sleep(1)
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=15) == 0
        assert time.time() - t0 < 5
        t.join(timeout=10)
        assert answers and answers[0]["Ruleset"]["Changed"] is False
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
