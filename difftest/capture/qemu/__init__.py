"""QEMU TCG as a second real implementation: compile a trace into a bare-metal guest, run it, read back outcomes."""
