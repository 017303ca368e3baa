import sys

from bench.policy.main import main

sys.exit(main())
