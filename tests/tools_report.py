"""`python -m tests.tools_report`: which of the slow tests' outside tools this machine has.

.ci/run prints this before the test run, so a CI log says whether Terraform and the Actions
runner tests ran or were skipped, and why.
"""

from __future__ import annotations

import sys

from .act_support import act_available
from .terraform_support import terraform_available


def main() -> int:
    """Print one line per tool; never fails (the tests themselves skip with the reason)."""
    reason = terraform_available()
    print(f"Terraform tests: {'will run' if reason is None else 'will be SKIPPED: ' + reason}")
    act = act_available()
    print(f"Actions runner (act) tests: {'will run' if act is None else 'will be SKIPPED: ' + act}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
