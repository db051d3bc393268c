"""bcc: the cluster tool (providers, node bootstrap, mounts, scheduler membership, watchdogs)."""
