"""`python -m fastpose ...` (also what torchrun runs: `torchrun ... -m fastpose train CONFIG`).

The guard matters: on a GPU the data pipeline's workers start with `spawn` (a CUDA context cannot be forked), and a
spawned worker imports this module again as `__mp_main__`; without the guard it would run the whole command again.
"""

from fastpose.cli import main

if __name__ == "__main__":
    main()
