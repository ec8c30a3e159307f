"""`python -m hf_transfer` (also `accelerate launch -m hf_transfer train ...`)."""

import sys

from hf_transfer.cli import main

sys.exit(main())
