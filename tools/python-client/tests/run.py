"""Runs every test_*.py beside this file (stdlib unittest) and ends with "N passed, M failed".

    build/client-venv/bin/python tools/python-client/tests/run.py

The closing line is the one `make test` reads for its "clients" suite; the exit status is 1 if
any test failed or errored, or if no test ran.
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [
    HERE,
    os.path.dirname(HERE),
]  # the helpers, and the package even without the venv's .pth


def main():
    suite = unittest.defaultTestLoader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
