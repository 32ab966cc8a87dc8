"""`python -m trainer ...` (and `torchrun -m trainer train ...`)."""
from trainer.cli import main

main()
