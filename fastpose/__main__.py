"""`python -m fastpose ...` (also what torchrun runs: `torchrun ... -m fastpose train CONFIG`)."""

from fastpose.cli import main

main()
