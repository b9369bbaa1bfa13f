"""``python -m sparkdl.worker <port>``: the Python worker the Scala classes start."""

import sys

from sparkdl.worker.jvm_worker import main

sys.exit(main())
