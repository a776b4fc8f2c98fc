import sys

from pgm_lab.cli.main import main

sys.exit(main())
