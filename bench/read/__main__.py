import sys

from bench.read.main import main

sys.exit(main())
