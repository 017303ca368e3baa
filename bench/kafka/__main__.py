import sys

from bench.kafka.main import main

sys.exit(main())
