import sys

from worker.run import main

sys.exit(main())
