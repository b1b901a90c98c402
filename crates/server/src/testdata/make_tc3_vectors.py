"""Regenerates tc3_sdk_vectors.json: requests signed by the real
tencentcloud-sdk-python signing code (AbstractClient._build_req_with_tc3_signature)
at fixed timestamps, for the Rust TC3 verifier tests.

    .venv/bin/python crates/server/src/testdata/make_tc3_vectors.py > crates/server/src/testdata/tc3_sdk_vectors.json
"""
import json, time
from unittest import mock
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.common.abstract_client import AbstractClient
from tencentcloud.common.http.request import RequestInternal
cases=[("vpc","2017-03-12","CreateSecurityGroup",{"GroupName":"web","GroupDescription":"web servers"},"127.0.0.1:9180",1764172800,False),
       ("cvm","2017-03-12","DescribeInstances",{},"127.0.0.1:19180",1700000000,False),
       ("vpc","2017-03-12","CreateSecurityGroupPolicies",{"SecurityGroupId":"sg-abcdefgh","SecurityGroupPolicySet":{"Ingress":[{"Protocol":"TCP","Port":"80,443","CidrBlock":"0.0.0.0/0","Action":"ACCEPT","PolicyDescription":"\u4e2d\u6587"}]}},"http://127.0.0.1:9180",1764199999,False),
       ("palisade","2026-11-01","DescribeInstanceRuleset",{"InstanceId":"ins-abcdefgh"},"127.0.0.1:9180",1764172800,True)]
out=[]
for svc,ver,action,params,endpoint,ts,unsigned in cases:
    cred=credential.Credential("AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE","Gu5t9xGARNpq86cd98joQYCN3EXAMPLE")
    hp=HttpProfile(protocol="http", endpoint=endpoint)
    cp=ClientProfile(httpProfile=hp); cp.unsignedPayload=unsigned
    c=AbstractClient(cred,"ap-guangzhou",cp)
    c._service=svc; c._apiVersion=ver
    req=RequestInternal(endpoint,"POST","/")
    with mock.patch("time.time",return_value=ts):
        c._build_req_with_tc3_signature(action,params,req)
    out.append({"service":svc,"secret_id":"AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE","secret_key":"Gu5t9xGARNpq86cd98joQYCN3EXAMPLE","headers":{k:v for k,v in req.header.items()},"body":req.data})
print(json.dumps(out,indent=1,ensure_ascii=False))
