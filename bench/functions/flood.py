"""Log-flood bench: a handler that prints `megabytes` (default 50) of 1 KB log lines per invocation."""

import sys

LINE = "f" * 1023 + "\n"


def handler(event, context):
    lines = int(event.get("megabytes", 50)) * 1024
    write = sys.stdout.write
    for _ in range(lines):
        write(LINE)
    sys.stdout.flush()
    return {"statusCode": 200, "body": str(lines)}
