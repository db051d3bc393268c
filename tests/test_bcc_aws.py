"""The aws provider against moto_server (127.0.0.1, a free port, started here) with moto's IAM
authentication on: a wrong key is refused like AWS would; instances are tagged per cluster and
group and carry the user data rendered from images/; bad input makes nothing; a failed start
terminates what it launched and deletes the subnet it made."""
import base64
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import ROOT
from gf_daemons import free_port, moto_server

sys.path.insert(0, ROOT)

REGION = "us-east-1"
ADMIN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@pytest.fixture(scope="module")
def moto():
    """moto_server with authentication after the first 4 calls (which make an IAM user and its key)."""
    import boto3
    with moto_server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"}, prefix="gf-moto-bcc-") as url:
        iam = boto3.client("iam", region_name=REGION, endpoint_url=url, aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap")
        iam.create_user(UserName="bcc")
        arn = iam.create_policy(PolicyName="all", PolicyDocument=ADMIN_POLICY)["Policy"]["Arn"]
        iam.attach_user_policy(UserName="bcc", PolicyArn=arn)
        k = iam.create_access_key(UserName="bcc")["AccessKey"]
        yield {"url": url, "key_id": k["AccessKeyId"], "secret": k["SecretAccessKey"]}


def ec2(m):
    import boto3
    return boto3.client("ec2", region_name=REGION, endpoint_url=m["url"], aws_access_key_id=m["key_id"],
                        aws_secret_access_key=m["secret"])


def bcc(home, *args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "BCC_SECRET"}
    e.update(GENEFARM_HOME=str(home), PYTHONPATH=ROOT, BCC_ALLOWED_NETS="127.0.0.0/8", **(env or {}))
    return subprocess.run([sys.executable, "-m", "bcc", *args], capture_output=True, text=True, env=e, cwd=ROOT,
                          timeout=300)


@pytest.fixture(scope="module")
def logged_in(moto, tmp_path_factory):
    home = tmp_path_factory.mktemp("bcc-aws-home")
    r = bcc(home, "login", f"aws/{REGION}", moto["key_id"], "--endpoint-url", moto["url"], "--json",
            env={"BCC_SECRET": moto["secret"]})
    assert r.returncode == 0, r.stderr
    return home


@pytest.fixture(scope="module")
def vpc(moto):
    c = ec2(moto)
    v = c.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    image = c.describe_images()["Images"][0]["ImageId"]
    return {"vpc": v, "image": image}


def our_instances(m, cluster=None, states=("pending", "running")):
    f = [{"Name": "instance-state-name", "Values": list(states)}]
    f.append({"Name": "tag:genefarm:cluster", "Values": [cluster]} if cluster else {"Name": "tag-key", "Values": ["genefarm:cluster"]})
    return [i for r in ec2(m).describe_instances(Filters=f)["Reservations"] for i in r["Instances"]]


def our_subnets(m):
    return ec2(m).describe_subnets(Filters=[{"Name": "tag-key", "Values": ["genefarm:cluster"]}])["Subnets"]


def test_login_checks_the_key(moto, tmp_path):
    r = bcc(tmp_path, "login", f"aws/{REGION}", moto["key_id"], "--endpoint-url", moto["url"],
            env={"BCC_SECRET": "not-the-secret"})
    assert r.returncode == 1, r.stderr
    assert "AWS refused key" in r.stderr and "not-the-secret" not in r.stderr
    assert not (tmp_path / "bcc" / "credentials.json").exists()
    r = bcc(tmp_path, "login", f"aws/{REGION}", "AKIDNOSUCHKEY0000000", "--endpoint-url", moto["url"],
            env={"BCC_SECRET": moto["secret"]})
    assert r.returncode == 1 and "AWS refused key AKIDNOSUCHKEY0000000" in r.stderr
    r = bcc(tmp_path, "login", f"aws/{REGION}", moto["key_id"], "--endpoint-url", moto["url"], "--json",
            env={"BCC_SECRET": moto["secret"]})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["key_id"] == moto["key_id"] and moto["secret"] not in r.stdout + r.stderr
    assert oct(os.stat(out["file"]).st_mode & 0o777) == "0o600"


def test_provider_create_describe_destroy(moto, logged_in, vpc, monkeypatch):
    from bcc.providers.aws import AWSProvider
    from bcc.specs import Disk
    monkeypatch.setenv("GENEFARM_HOME", str(logged_in))
    cfg = {"bcc_home": os.path.join(str(logged_in), "bcc"),
           "aws": {"region": REGION, "endpoint_url": moto["url"], "vpc_id": vpc["vpc"], "cidr": "10.20.7.0/24"}}
    p = AWSProvider(cfg, talk=lambda *a: None)
    assert str(p.master_network()) == "10.20.0.0/16"
    p.check("t3.medium", vpc["image"], [Disk("gp3", 20)])
    boot = {"scheduler": "sge", "hosts": [("master", "10.20.0.5")], "fstab": ["fs:/data /data nfs4 rw,hard 0 0"]}
    ms = p.create("c-awstest1", "group1", 2, "t3.medium", vpc["image"], [Disk("gp3", 20)], set(), boot=boot)
    assert len(ms) == 2 and all(m.slots == 2 and m.address.startswith("10.20.7.") for m in ms)
    inst = our_instances(moto, "c-awstest1")
    assert sorted(i["InstanceId"] for i in inst) == sorted(m.provider_id for m in ms)
    for i in inst:
        tags = {t["Key"]: t["Value"] for t in i["Tags"]}
        assert tags["genefarm:cluster"] == "c-awstest1" and tags["genefarm:group"] == "group1"
        assert i["InstanceType"] == "t3.medium" and i["SubnetId"] == cfg["aws"]["subnet_id"]
        ud = ec2(moto).describe_instance_attribute(InstanceId=i["InstanceId"], Attribute="userData")
        text = base64.b64decode(ud["UserData"]["Value"]).decode()
        assert text.startswith("#!/bin/bash\n") and "'master=10.20.0.5'" in text and "fs:/data /data nfs4" in text
        payload = text.split("<<'GENEFARM_PAYLOAD'\n")[1].split("\nGENEFARM_PAYLOAD")[0]
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(payload))) as tar:
            assert "sge/bootstrap.sh" in tar.getnames()
        vols = ec2(moto).describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [i["InstanceId"]]}])
        assert any(v["Size"] == 20 and v["VolumeType"] == "gp3" for v in vols["Volumes"]), vols
    seen = p.describe("c-awstest1")
    assert {m.provider_id for m in seen} == {m.provider_id for m in ms}
    p.destroy("c-awstest1", ms[:1])
    assert {m.provider_id for m in p.describe("c-awstest1")} == {ms[1].provider_id}
    p.cleanup("c-awstest1")
    assert p.describe("c-awstest1") == [] and "subnet_id" not in cfg["aws"]


def _start(home, moto, vpc, *extra):
    key = os.path.join(str(home), "id")
    if not os.path.exists(key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    return bcc(home, "start", "--provider", "aws", "--region", REGION, "--endpoint-url", moto["url"],
               "--vpc-id", vpc["vpc"], "--identity", key, "--trust-new-host-keys", *extra)


def test_bad_input_makes_nothing(moto, logged_in, vpc):
    before = len(our_instances(moto)), len(our_subnets(moto))
    cases = [
        (["-n", "2", "-t", "t9.nonsense", "-i", vpc["image"]], "unknown instance type 't9.nonsense'"),
        (["-n", "2", "-t", "t3.medium", "-i", "ami-00000000deadbeef0"], "unknown image 'ami-00000000deadbeef0'"),
        (["-n", "2", "-t", "t3.medium", "-i", vpc["image"], "--vpc_cidr_block", "10.99.0.0/24",
          "--master-address", "10.20.0.5"], "outside the master's network 10.20.0.0/16"),
        (["-n", "2", "-t", "t3.medium", "-i", vpc["image"]], "give the master's address on the workers' network"),
        (["-n", "2", "-t", "t3.medium", "-i", vpc["image"], "--master-address", "10.99.0.5"],
         "the master's address 10.99.0.5 is not in its VPC 10.20.0.0/16"),
        (["-n", "2", "-t", "t3.medium", "-i", vpc["image"], "-d", "ssd9:10"], "unknown disk type"),
        (["-n", "2", "-t", "t3.medium", "-i", vpc["image"], "-m", "s3://x/:/data"], "not a valid bucket name"),
    ]
    for argv, want in cases:
        r = _start(logged_in, moto, vpc, *argv)
        assert r.returncode == 2, (argv, r.stderr)
        assert want in r.stderr, (argv, r.stderr)
    assert (len(our_instances(moto)), len(our_subnets(moto))) == before


def test_failed_start_rolls_back(moto, logged_in, vpc):
    """Instances launched, then the master refuses SSH: everything launched is terminated, the subnet goes."""
    refusing = f"master=root@127.0.0.1:{free_port()}"
    r = _start(logged_in, moto, vpc, "-n", "2", "--group_num", "2", "-t", "t3.small", "-i", vpc["image"],
               "--vpc_cidr_block", "10.20.9.0/24", "-d", "gp3:10", "--master", refusing, "--master-address", "10.20.0.5", "--json")
    assert r.returncode == 1, r.stderr
    assert "connection refused" in r.stderr and "rolling back" in r.stderr
    st = json.loads(bcc(logged_in, "status", "--all", "--json").stdout)
    failed = [c for c in st["clusters"] if c["state"] == "failed"]
    assert len(failed) == 1
    cid = failed[0]["id"]
    made = our_instances(moto, cid, states=("pending", "running", "shutting-down", "terminated"))
    assert len(made) == 4                                        # 2 groups x 2 were launched ...
    assert {t["Value"] for i in made for t in i["Tags"] if t["Key"] == "genefarm:group"} == {"default", "group1"}
    assert our_instances(moto, cid) == []                          # ... and none is left running
    assert not [s for s in our_subnets(moto) if s["CidrBlock"] == "10.20.9.0/24"]
    st = json.loads(bcc(logged_in, "status", cid, "--json").stdout)
    assert all(n["state"] not in ("up", "creating") for g in st["groups"] for n in g["nodes"])
    assert any(e["step"] == "rollback" for e in st["events"])


def test_instance_types_listed(moto, logged_in):
    r = bcc(logged_in, "type", "--provider", "aws", "--region", REGION, "--endpoint-url", moto["url"], "--json")
    assert r.returncode == 0, r.stderr
    names = {t["name"]: t for t in json.loads(r.stdout)}
    assert names["t3.medium"]["cpus"] == 2
    r = bcc(logged_in, "disk", "--provider", "aws", "--json")
    assert {d["name"] for d in json.loads(r.stdout)} >= {"gp3", "io2"}
