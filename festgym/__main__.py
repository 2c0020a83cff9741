import sys

from festgym.cli import main

sys.exit(main())
