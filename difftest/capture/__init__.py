"""Captures of real behaviour: the /dev/kvm recorder, the QEMU TCG recorder, and importers of foreign traces."""
