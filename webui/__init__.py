"""genefarm web UI: job progress, logs and nodes for scientists who do not use a shell."""
