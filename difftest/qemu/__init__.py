"""Recording under QEMU TCG: compile a trace into a tiny guest, boot it, read back what happened."""
