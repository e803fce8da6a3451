import sys

from skipvsr.cli import main

sys.exit(main())
