"""Fail unless pytest's JUnit report exists and counts tests run with none failed."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

report = Path(sys.argv[1])
if not report.is_file():
    sys.exit(f"CI: {report} was not written: the test session did not end normally")
suites = ET.parse(report).getroot()
suites = [suites] if suites.tag == "testsuite" else list(suites)
counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
print(f"CI: {counts['tests']} tests, {counts['failures']} failures, {counts['errors']} errors, "
      f"{counts['skipped']} skipped")
if counts["tests"] == 0 or counts["failures"] or counts["errors"]:
    sys.exit(1)
