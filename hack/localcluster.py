#!/usr/bin/env python3
"""`python hack/localcluster.py ARGS` is `python -m localcluster ARGS` (hack/localcluster/).

Run as a script, this file's directory is first on sys.path and the package
wins over this module of the same name. Only for the callers that still name
this file (hack/chart-dev.sh, hack/chart-sa-kubeconfig.sh); delete it once they
run `python -m localcluster` with hack/ on PYTHONPATH.
"""

import sys

from localcluster.cli import main

sys.exit(main())
