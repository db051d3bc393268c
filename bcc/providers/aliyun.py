"""aliyun (Alibaba Cloud ECS): NOT AVAILABLE in this version.

The provider interface (bcc.providers.base.Provider) has room for it: create would call ECS
RunInstances with the same cloud-init user data as aws (bcc.images.user_data), tagged per cluster
and group; describe DescribeInstances by tag; destroy DeleteInstances. It is not written because
nothing here can test it (no ECS-compatible server is available to the tests). Every use fails
loudly with exit 1; `bcc login aliyun/REGION` stores credentials for when it exists.
"""
from bcc.errors import Unavailable
from bcc.providers.base import Provider

MESSAGE = ("the aliyun (ECS) provider is not available in this version of bcc: use --provider ssh with hosts "
           "you already have, or --provider aws")


class AliyunProvider(Provider):
    name = "aliyun"

    def __init__(self, config, talk):
        raise Unavailable(MESSAGE)
