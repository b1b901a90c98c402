// Drives Palisade with Tencent's official Node.js SDK, configured as
// docs/api.md shows: a security group with one rule, described back, the
// instances through the typed CVM client, and STS GetCallerIdentity.
// Prints one JSON object; tests/api/test_api_node.py checks it.
//
// Environment: PALISADE_SECRET_ID, PALISADE_SECRET_KEY, PALISADE_HOST (the
// endpoint without the service label: `127.0.0.1:9180`, or a name and port
// when PALISADE_RESOLVE is set), PALISADE_RESOLVE (optional: the address
// every host name resolves to, so that `vpc.example.test` needs no DNS or
// /etc/hosts entry), PALISADE_NAMED=1 (endpoints `vpc.` + host, `cvm.` +
// host, `sts.` + host instead of the host alone), PALISADE_TLS=1 (https://;
// trust a private CA with Node's NODE_EXTRA_CA_CERTS).
"use strict";
const http = require("http");
const https = require("https");
const { CommonClient } = require("tencentcloud-sdk-nodejs-common");
const cvm = require("tencentcloud-sdk-nodejs-cvm").cvm.v20170312;

const env = process.env;
const host = env.PALISADE_HOST;
const named = env.PALISADE_NAMED === "1";
const resolve = env.PALISADE_RESOLVE;
const tls = env.PALISADE_TLS === "1";
// Node's own lookup hook: the agent's connections resolve every name to
// PALISADE_RESOLVE. The SDK still sends and signs the name.
const agent = resolve
  ? new (tls ? https : http).Agent({
      lookup: (_name, options, cb) =>
        options && options.all
          ? cb(null, [{ address: resolve, family: resolve.includes(":") ? 6 : 4 }])
          : cb(null, resolve, resolve.includes(":") ? 6 : 4),
    })
  : undefined;

function config(service) {
  return {
    credential: { secretId: env.PALISADE_SECRET_ID, secretKey: env.PALISADE_SECRET_KEY },
    region: "ap-guangzhou",
    profile: {
      httpProfile: {
        protocol: tls ? "https://" : "http://",
        endpoint: named ? `${service}.${host}` : host,
        agent,
      },
    },
  };
}

async function main() {
  const vpc = new CommonClient("vpc.tencentcloudapi.com", "2017-03-12", config("vpc"));
  const created = await vpc.request("CreateSecurityGroup", {
    GroupName: "node",
    GroupDescription: "made by the Node.js SDK",
  });
  const sg = created.SecurityGroup.SecurityGroupId;
  await vpc.request("CreateSecurityGroupPolicies", {
    SecurityGroupId: sg,
    SecurityGroupPolicySet: {
      Ingress: [{ Protocol: "TCP", Port: "443", CidrBlock: "10.0.0.0/8", Action: "ACCEPT", PolicyDescription: "https" }],
    },
  });
  const policies = await vpc.request("DescribeSecurityGroupPolicies", { SecurityGroupId: sg });
  const instances = await new cvm.Client(config("cvm")).DescribeInstances({});
  const sts = new CommonClient("sts.tencentcloudapi.com", "2018-08-13", config("sts"));
  const identity = await sts.request("GetCallerIdentity", {});
  let error = null;
  try {
    await vpc.request("DescribeSecurityGroupPolicies", { SecurityGroupId: "sg-00000000" });
  } catch (e) {
    error = e.code;
  }
  process.stdout.write(
    JSON.stringify({
      SecurityGroupId: sg,
      Ingress: policies.SecurityGroupPolicySet.Ingress,
      TotalCount: instances.TotalCount,
      AccountId: identity.AccountId,
      Error: error,
    }) + "\n",
  );
}

main().catch((e) => {
  process.stderr.write(`${e.code || ""} ${e.message}\n`);
  process.exit(1);
});
