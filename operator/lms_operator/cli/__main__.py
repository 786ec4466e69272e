"""`python -m lms_operator.cli`: the same as the `lms` entry point (used by tests and the benchmarks)."""
import sys

from lms_operator.cli import main

sys.exit(main())
