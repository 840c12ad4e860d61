import sys

from handles.simulator.cli import main

sys.exit(main())
