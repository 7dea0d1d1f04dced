#!/usr/bin/env python3
"""Prints the numbers of librdkafka tests that need a live broker (not local/mock-only, not
manual), read from the test table in tests/test.c. Usage: list-tests.py TEST_C [LO-HI]"""
import re
import sys

src = open(sys.argv[1]).read()
lo, hi = (sys.argv[2].split("-") if len(sys.argv) > 2 else ("0000", "0999"))
start = src.index("struct test tests[] = {")
body = src[start:src.index("{NULL}};", start)]
body = re.sub(r"#if WITH_SOCKEM|#endif", "", body)
nums = set()
for name, flags in re.findall(r"_TEST\((\w+),\s*([^,\)]+)", body):
    if "LOCAL" in flags or "MANUAL" in flags:
        continue
    if int(lo) <= int(name[:4]) <= int(hi):
        nums.add(name[:4])
print("\n".join(sorted(nums)))
