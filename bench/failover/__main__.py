import sys

from bench.failover.main import main

sys.exit(main())
