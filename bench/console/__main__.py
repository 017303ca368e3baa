import sys

from bench.console.main import main

sys.exit(main())
