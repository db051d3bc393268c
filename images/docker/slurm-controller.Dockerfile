# genefarm slurm controller (images/docker/slurm-controller.Dockerfile): build from the repository root:
#   docker build -f images/docker/slurm-controller.Dockerfile -t genefarm/slurm-controller .
# The same bootstrap bcc runs over SSH (images/slurm/bootstrap.sh --role controller) with its watchdog, in the foreground.
FROM debian:12
ENV DEBIAN_FRONTEND=noninteractive
COPY images/ /opt/genefarm/images/
RUN  apt-get update -q && /opt/genefarm/images/common/packages.sh $(cat /opt/genefarm/images/slurm/packages.txt) \
    && rm -rf /var/lib/apt/lists/*
EXPOSE 16817
ENTRYPOINT ["/opt/genefarm/images/common/container-entry.sh", "slurm", "controller"]
