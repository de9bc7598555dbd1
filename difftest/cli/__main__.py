"""``python -m difftest.cli``."""

from difftest.cli import main

main()
