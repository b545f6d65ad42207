"""Runs one Python job on Quayside: enqueue, follow its logs, wait for the result.

    REDIS_URL=redis://127.0.0.1:6379 QUAYSIDE_QUEUE=default python example.py

Set JOB_ID to choose the id (the idempotency key): if that job exists already, whoever
enqueued it, this follows it instead. Exit code 0 iff the job succeeded.
"""

import json
import os
import sys
import uuid

import redis

from quayside_client import enqueue, logs, wait

PROGRAM = """\
import sys, time
numbers = [int(n) for n in sys.stdin.read().split()]
print(f"read {len(numbers)} numbers", flush=True)
time.sleep(0.2)
print("adding them up", file=sys.stderr, flush=True)
time.sleep(0.2)
print(f"sum={sum(numbers)}", flush=True)
"""


def main():
    r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"),
                             decode_responses=True, encoding_errors="replace")
    queue = os.environ.get("QUAYSIDE_QUEUE", "default")
    spec = {
        "id": os.environ.get("JOB_ID") or f"py-example-{uuid.uuid4()}",
        "kind": "run",
        "language": "python",
        "files": {"main.py": PROGRAM},
        "stdin": "19 23\n",
        "limits": {"run_wall_time_ms": 10000},
    }
    job_id, existing = enqueue(r, queue, spec)
    if existing:
        print(f"{job_id} already exists ({existing}): following that job")
    else:
        print(f"enqueued {job_id}")
        # Retrying is safe (say, after a timeout): the same id is the same job.
        _, existing = enqueue(r, queue, spec)
        print(f"enqueued again: nothing added, the job is {existing}")

    for source, text in logs(r, queue, job_id):
        for line in text.splitlines():
            print(f"[{source}] {line}")

    result = wait(r, queue, job_id, timeout=120)
    print(f"{result['status']} (exit code {result.get('exit_code')}), "
          f"stdout {result['stdout']['data']!r}")
    print(json.dumps(result))
    return 0 if result["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
