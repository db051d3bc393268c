# genefarm sge exec (images/docker/sge-exec.Dockerfile): build from the repository root:
#   docker build -f images/docker/sge-exec.Dockerfile -t genefarm/sge-exec .
# The same bootstrap bcc runs over SSH (images/sge/bootstrap.sh --role exec) with its watchdog, in the foreground.
FROM debian:12
ENV DEBIAN_FRONTEND=noninteractive
COPY images/ /opt/genefarm/images/
RUN /opt/genefarm/images/sge/bootstrap.sh preseed --master genefarm-master && apt-get update -q && /opt/genefarm/images/common/packages.sh $(cat /opt/genefarm/images/sge/packages.txt) \
    && rm -rf /var/lib/apt/lists/*
EXPOSE 16445
ENTRYPOINT ["/opt/genefarm/images/common/container-entry.sh", "sge", "exec"]
