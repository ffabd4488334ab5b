"""``python -m tdam.train --config <yaml> [--profile NAME] [--key value ...]``: see :mod:`tdam.train.cli`."""
import sys

from tdam.train.cli import main

sys.exit(main())
