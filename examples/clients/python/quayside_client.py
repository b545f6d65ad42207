"""Quayside from Python with plain redis-py: enqueue a job, wait for its result, read its logs.

Implements docs/protocol.md. Pass a client made with ``decode_responses=True``, e.g.
``redis.Redis.from_url(url, decode_responses=True, encoding_errors="replace")`` (log chunks are
the program's raw bytes and may not be UTF-8).
"""

import json
import time
import uuid
from pathlib import Path

# `quayside script enqueue > enqueue.lua`, vendored: regenerate it when you upgrade Quayside.
ENQUEUE_LUA = Path(__file__).resolve().parent.parent / "enqueue.lua"
PRIORITIES = {"high": 1, "normal": 2, "low": 3}
NOT_ENDED = {"queued", "delayed", "running"}
DEFAULT_RESULT_TTL_S = 86400

_enqueue_script = None


class QueueFull(Exception):
    """The queue holds `queue.max_depth` entries already; try again later."""


def _prefix(queue):
    return f"qs:{{{queue}}}:"  # every key of a queue; the {tag} keeps them in one cluster slot


def enqueue(r, queue, spec, max_depth=0):
    """Enqueues `spec` (a job spec dict) and returns ``(id, existing)``.

    The id is the idempotency key: when a job with this id exists (from any client),
    nothing is added and ``existing`` is that job's state; it is None for a new job.
    """
    global _enqueue_script
    if _enqueue_script is None:
        # EVALSHA, falling back to EVAL (which caches it) when Redis does not know the script.
        _enqueue_script = r.register_script(ENQUEUE_LUA.read_text())
    spec = {"v": 1, "id": str(uuid.uuid4()), **spec}
    prio = PRIORITIES[spec.get("priority", "normal")]
    args = [_prefix(queue), max_depth, 1,
            spec["id"], prio, json.dumps(spec), spec.get("batch", ""),
            spec.get("result_ttl_s", DEFAULT_RESULT_TTL_S),
            # The tenant (its lane and fair share), and its queued cap (0: none) if you hold
            # your callers to one: the script cannot read the operator's config.
            spec.get("tenant", ""), 0]
    [answer] = _enqueue_script(keys=[_prefix(queue) + "stream:normal"], args=args, client=r)
    if answer == "full" or answer.startswith("tenant_full:"):
        raise QueueFull(queue)
    kind, _, state = answer.partition(":")
    return spec["id"], (state if kind == "exists" else None)


def wait(r, queue, job_id, timeout=None):
    """Waits for the job's result (a dict, see docs/protocol.md) without polling.

    Raises TimeoutError after `timeout` seconds (None: wait forever).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with r.pubsub() as sub:
        sub.subscribe(_prefix(queue) + "done:" + job_id)
        while True:
            state, result = r.hmget(_prefix(queue) + "job:" + job_id, "state", "result")
            if state is not None and state not in NOT_ENDED:
                return json.loads(result)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {job_id} still {state or 'unknown'}")
            # The first message is the subscription's confirmation: looking again after it
            # closes the race with a result written before we subscribed.
            sub.get_message(timeout=left)


def logs(r, queue, job_id, follow=True):
    """Yields the job's log as ``(source, text)``: source is stdout, stderr, compile, system,
    or end (last, text = the job's status). Without `follow`, stops at what exists now."""
    key, last, ended = _prefix(queue) + "logs:" + job_id, "0-0", False
    while True:
        reply = r.xread({key: last}, count=512, block=1000 if follow and not ended else None)
        entries = reply[0][1] if reply else []
        for last, fields in entries:
            yield fields["s"], fields.get("d", "")
            if fields["s"] == "end":
                return
        if entries:
            continue
        if not follow:
            return
        state = r.hget(_prefix(queue) + "job:" + job_id, "state")
        if ended:
            # Ended and nothing (more) was logged: a silent job has no log stream.
            yield "end", state
            return
        # A second of silence: read once more without blocking if the job has ended.
        ended = state is not None and state not in NOT_ENDED
