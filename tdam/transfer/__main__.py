"""``python -m tdam.transfer --config <yaml> [--key value ...]``: see :mod:`tdam.transfer.cli`."""
import sys

from tdam.transfer.cli import main

sys.exit(main())
