"""``python -m ablations.results collect EXP_DIR [...]`` (:func:`ablations.results.load.main`)."""

import sys

from ablations.results.load import main

sys.exit(main())
