import sys

from bench.evidence.main import main

sys.exit(main())
