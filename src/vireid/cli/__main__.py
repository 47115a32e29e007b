"""``python -m vireid.cli ...`` (what ``torchrun`` launches for distributed training)."""

from vireid.cli import main

main()
