import sys

from bench.write.main import main

sys.exit(main())
