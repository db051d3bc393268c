"""aws: EC2 through boto3. Workers are instances in a subnet bcc makes for the cluster (the
--vpc_cidr_block, inside the master's VPC), tagged genefarm:cluster / genefarm:group, with
cloud-init user data rendered from images/ (bcc.images.user_data). Credentials come from
`bcc login aws/REGION KEY_ID`; the endpoint from --endpoint-url or AWS_ENDPOINT_URL (tests: moto)."""
import ipaddress
import os
import time

from bcc import creds, images, remote
from bcc.errors import BadInput, BccError
from bcc.providers.base import Machine, Provider
from bcc.specs import parse_host

DISK_TYPES = {"gp3": "general purpose SSD", "gp2": "general purpose SSD (older)", "io1": "provisioned IOPS SSD",
              "io2": "provisioned IOPS SSD", "st1": "throughput HDD", "sc1": "cold HDD", "standard": "magnetic"}
TAG_CLUSTER, TAG_GROUP = "genefarm:cluster", "genefarm:group"
LIVE = ["pending", "running", "stopping", "stopped"]
SSH_WAIT = 300          # seconds a new instance may take to answer SSH


def client(region, endpoint_url=None, base=None):
    import boto3
    c = creds.get(f"aws/{region}", base=base)
    return boto3.client("ec2", region_name=region, endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"),
                        aws_access_key_id=c["key_id"], aws_secret_access_key=c["secret"])


def explain(e, what):
    """A botocore ClientError -> BccError/BadInput that says what to do."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    if isinstance(e, ClientError):
        code = e.response.get("Error", {}).get("Code", "")
        msg = e.response.get("Error", {}).get("Message", "")
        if code in ("AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException"):
            return BccError(f"{what}: AWS refused the credentials ({code}): run `bcc login aws/REGION KEY_ID` again")
        return BccError(f"{what}: {code}: {msg}")
    if isinstance(e, (EndpointConnectionError, NoCredentialsError)):
        return BccError(f"{what}: {e}")
    return e


class AWSProvider(Provider):
    name = "aws"
    default_disk = "gp3"

    def __init__(self, config, talk):
        super().__init__(config, talk)
        c = config.setdefault("aws", {})
        self.c = c
        self.region = c.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.endpoint = c.get("endpoint_url")
        self.base = config.get("bcc_home")
        self._ec2 = None

    @property
    def ec2(self):
        if self._ec2 is None:
            self._ec2 = client(self.region, self.endpoint, self.base)
        return self._ec2

    def _call(self, what, fn, **kw):
        try:
            return fn(**kw)
        except Exception as e:  # noqa: BLE001 (translated)
            raise explain(e, what) from None

    def types(self):
        out = []
        for page in self.ec2.get_paginator("describe_instance_types").paginate():
            for t in page["InstanceTypes"]:
                out.append({"name": t["InstanceType"], "cpus": t["VCpuInfo"]["DefaultVCpus"],
                            "memory_gb": round(t["MemoryInfo"]["SizeInMiB"] / 1024, 1), "note": ""})
        return sorted(out, key=lambda t: (t["name"].split(".")[0], t["cpus"], t["name"]))

    def disk_types(self):
        return [{"name": k, "note": v} for k, v in DISK_TYPES.items()]

    def _vcpus(self, instance_type):
        from botocore.exceptions import ClientError
        try:
            r = self.ec2.describe_instance_types(InstanceTypes=[instance_type])
        except ClientError as e:
            if "InvalidInstanceType" in str(e) or e.response["Error"]["Code"].startswith("InvalidInstanceType"):
                raise BadInput(f"unknown instance type '{instance_type}' in {self.region}: see `bcc type --provider aws`") \
                    from None
            raise explain(e, "describe instance types") from None
        if not r["InstanceTypes"]:
            raise BadInput(f"unknown instance type '{instance_type}' in {self.region}: see `bcc type --provider aws`")
        return r["InstanceTypes"][0]["VCpuInfo"]["DefaultVCpus"]

    def check(self, instance_type, image, disks):
        from botocore.exceptions import ClientError
        if not self.c.get("vpc_id"):
            raise BadInput("the aws provider needs the master's VPC: give --vpc-id VPC_ID")
        self._vcpus(instance_type)
        try:
            r = self.ec2.describe_images(ImageIds=[image])
            ok = bool(r["Images"])
        except ClientError as e:
            if e.response["Error"]["Code"].startswith("InvalidAMIID"):
                ok = False
            else:
                raise explain(e, "describe images") from None
        if not ok:
            raise BadInput(f"unknown image '{image}' in {self.region}: give an AMI id that exists there (a Debian 12 "
                           "AMI; `aws ec2 describe-images --owners 136693071363` lists Debian's)")
        for d in disks:
            if d.kind not in DISK_TYPES:
                raise BadInput(f"unknown disk type {d.kind}: see `bcc disk --provider aws`")

    def master_network(self, master=None, address=None):
        vpc = self.c["vpc_id"]
        r = self._call("describe the master's VPC", self.ec2.describe_vpcs, VpcIds=[vpc])
        return ipaddress.IPv4Network(r["Vpcs"][0]["CidrBlock"])

    def master_remote(self):
        spec = self.config.get("ssh", {}).get("master", "local")
        if spec == "local":
            import socket
            return remote.LocalRemote(socket.gethostname())
        c = self.config.get("ssh", {})
        return remote.connect(parse_host(spec), c.get("identity"), c.get("host_keys"), c.get("trust_new", False),
                              self.talk, base=self.base)

    def _subnet(self, cluster_id):
        if self.c.get("subnet_id"):
            return self.c["subnet_id"]
        r = self._call("create the cluster's subnet", self.ec2.create_subnet, VpcId=self.c["vpc_id"],
                       CidrBlock=self.c["cidr"],
                       TagSpecifications=[{"ResourceType": "subnet", "Tags": [{"Key": TAG_CLUSTER, "Value": cluster_id}]}])
        self.c["subnet_id"] = r["Subnet"]["SubnetId"]
        self.talk(f"bcc: made subnet {self.c['subnet_id']} ({self.c['cidr']}) in {self.c['vpc_id']}")
        return self.c["subnet_id"]

    def create(self, cluster_id, group, n, instance_type, image, disks, in_use, boot=None):
        subnet = self._subnet(cluster_id)
        vcpus = self._vcpus(instance_type)
        boot = boot or {}
        ud = images.user_data(role=boot.get("role", "worker"), scheduler=boot.get("scheduler", "sge"), image=image,
                              hosts=boot.get("hosts", []), fstab_lines=boot.get("fstab", []),
                              node_root=boot.get("node_root", "/var/lib/genefarm-node"), cluster_id=cluster_id)
        bdm = [{"DeviceName": f"/dev/sd{chr(ord('f') + i)}",
                "Ebs": {"VolumeSize": d.size_gb, "VolumeType": d.kind, "DeleteOnTermination": True}}
               for i, d in enumerate(disks)]
        tags = [{"Key": TAG_CLUSTER, "Value": cluster_id}, {"Key": TAG_GROUP, "Value": group},
                {"Key": "Name", "Value": f"genefarm-{cluster_id}-{group}"}]
        kw = dict(ImageId=image, InstanceType=instance_type, MinCount=n, MaxCount=n, SubnetId=subnet, UserData=ud,
                  TagSpecifications=[{"ResourceType": "instance", "Tags": tags},
                                     {"ResourceType": "volume", "Tags": tags}])
        if bdm:
            kw["BlockDeviceMappings"] = bdm
        if self.c.get("key_name"):
            kw["KeyName"] = self.c["key_name"]
        r = self._call(f"launch {n} {instance_type} for group {group}", self.ec2.run_instances, **kw)
        ids = [i["InstanceId"] for i in r["Instances"]]
        self.talk(f"bcc: launched {', '.join(ids)}; waiting for them to run")
        try:
            self.ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 60})
        except Exception as e:  # noqa: BLE001 (what it made is released: the provider's contract)
            self._call("terminate the instances that did not run", self.ec2.terminate_instances, InstanceIds=ids)
            raise BccError(f"instances {ids} did not reach 'running' in 300 s ({e}): terminated them") from None
        running = self._call("describe the new instances", self.ec2.describe_instances, InstanceIds=ids)
        return [Machine(provider_id=i["InstanceId"], name=i.get("PrivateDnsName", "").split(".")[0] or i["InstanceId"],
                        address=i.get("PrivateIpAddress", ""), slots=vcpus, state=i["State"]["Name"])
                for res in running["Reservations"] for i in res["Instances"]]

    def describe(self, cluster_id):
        out = []
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]},
                     {"Name": "instance-state-name", "Values": LIVE}])
        try:
            for page in pages:
                for res in page["Reservations"]:
                    for i in res["Instances"]:
                        out.append(Machine(i["InstanceId"], i.get("PrivateDnsName", "").split(".")[0],
                                           i.get("PrivateIpAddress", ""), i.get("CpuOptions", {}).get("CoreCount", 0),
                                           i["State"]["Name"]))
        except Exception as e:  # noqa: BLE001
            raise explain(e, "describe the cluster's instances") from None
        return out

    def destroy(self, cluster_id, machines):
        ids = [m.provider_id for m in machines if m.provider_id.startswith("i-")]
        if ids:
            self._call("terminate instances", self.ec2.terminate_instances, InstanceIds=ids)

    def cleanup(self, cluster_id):
        sub = self.c.get("subnet_id")
        if not sub:
            return
        left = self.describe(cluster_id)
        if left:
            self.destroy(cluster_id, left)
        ids = [m.provider_id for m in left]
        if ids:
            try:
                self.ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
            except Exception as e:  # noqa: BLE001
                raise BccError(f"instances {ids} did not terminate: {e}; subnet {sub} kept") from None
        self._call(f"delete subnet {sub}", self.ec2.delete_subnet, SubnetId=sub)
        self.talk(f"bcc: deleted subnet {sub}")
        self.c.pop("subnet_id", None)

    def remote(self, machine):
        c = self.config.get("ssh", {})
        user = self.c.get("ssh_user", "admin")
        spec = parse_host(f"{machine.name or 'node'}={user}@{machine.address}")
        deadline = time.time() + SSH_WAIT
        while True:       # a new instance's sshd comes up a while after 'running'
            try:
                return remote.connect(spec, c.get("identity"), c.get("host_keys"), c.get("trust_new", False),
                                      self.talk, base=self.base)
            except BccError as e:
                if not str(e).startswith("cannot reach") or time.time() > deadline:
                    raise
                time.sleep(5)
