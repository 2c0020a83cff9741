import sys

from festgym.cli.main import main

sys.exit(main())
