# genefarm sge master (images/docker/sge-master.Dockerfile): build from the repository root:
#   docker build -f images/docker/sge-master.Dockerfile -t genefarm/sge-master .
# The same bootstrap bcc runs over SSH (images/sge/bootstrap.sh --role master) with its watchdog, in the foreground.
FROM debian:12
ENV DEBIAN_FRONTEND=noninteractive
COPY images/ /opt/genefarm/images/
RUN /opt/genefarm/images/sge/bootstrap.sh preseed --master genefarm-master && apt-get update -q && /opt/genefarm/images/common/packages.sh $(cat /opt/genefarm/images/sge/packages.txt) \
    && rm -rf /var/lib/apt/lists/*
EXPOSE 16444
ENTRYPOINT ["/opt/genefarm/images/common/container-entry.sh", "sge", "master"]
