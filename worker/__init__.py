"""genefarm worker: runs one task on a node (stage in, run the kernel, stage out, report)."""
