import sys

from bench.streams.main import main

sys.exit(main())
