"""Providers: where worker machines come from. One interface (bcc.providers.base.Provider)."""
from bcc.errors import BadInput

NAMES = ("ssh", "aws", "aliyun")


def get(name, cluster_config, talk):
    if name == "ssh":
        from bcc.providers.ssh import SSHProvider
        return SSHProvider(cluster_config, talk)
    if name == "aws":
        from bcc.providers.aws import AWSProvider
        return AWSProvider(cluster_config, talk)
    if name == "aliyun":
        from bcc.providers.aliyun import AliyunProvider
        return AliyunProvider(cluster_config, talk)
    raise BadInput(f"unknown provider '{name}': use one of {', '.join(NAMES)}")
