"""`python -m myllm ...` (and `torchrun -m myllm ...`) is the same as the `myllm` command."""

from myllm.cli import main

raise SystemExit(main())
