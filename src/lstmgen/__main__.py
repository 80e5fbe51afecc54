"""``python -m lstmgen`` (and ``torchrun -m lstmgen``) run the lstmgen command."""

import sys

from lstmgen.cli.main import main

sys.exit(main())
