import sys

from skipvsr.cli.main import main

sys.exit(main())
