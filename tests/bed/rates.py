"""Request-rate quotas in front of moto, as AWS enforces them: token buckets.

Opt-in: none are set unless `aws_server.py --rates FILE` or
`POST /_bed/rates` gives some, so every other test sees no throttling.

    {"buckets": [
      {"name": "kms", "actions": ["Decrypt", "GenerateDataKey"], "rate": 55, "burst": 55},
      {"name": "s3-get", "actions": ["GetObject", "HeadObject", "ListObjectsV2"],
       "rate": 55, "burst": 55, "per_prefix": true}
    ]}

Each bucket holds up to `burst` tokens and gains `rate` tokens a second; a
call of one of its `actions` takes a token, or is throttled when none is
left (answered as the service throttles: KMS `ThrottlingException` 400, S3
`SlowDown` 503, EC2 `RequestLimitExceeded` 503; `control.error_response`).
A `per_prefix` bucket is one bucket per S3 bucket and prefix, the prefix
being the first folder of the object key (or of a listing's `prefix=`), as
S3 scales per partitioned prefix. A call matching several buckets takes a
token from each. Pure bookkeeping; the clock is injectable for tests.
"""

import threading
import time
from collections import Counter
from urllib.parse import parse_qs

_S3_LISTS = {"ListObjectsV2", "ListObjects", "ListObjectVersions"}


class Bucket:
    """One token bucket's settings, from the JSON above."""

    def __init__(self, spec):
        self.name = str(spec["name"])
        self.actions = frozenset(spec["actions"])
        self.rate = float(spec["rate"])
        self.burst = float(spec.get("burst", spec["rate"]))
        self.per_prefix = bool(spec.get("per_prefix", False))
        if not self.name or not self.actions:
            raise ValueError("a bucket needs a name and at least one action")
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"{self.name}: rate > 0 and burst >= 1, please")

    def to_json(self):
        return {
            "name": self.name,
            "actions": sorted(self.actions),
            "rate": self.rate,
            "burst": self.burst,
            "per_prefix": self.per_prefix,
        }


def s3_prefix(environ, action):
    """`bucket/folder/` of an S3 request (path style): the object key's first
    folder, or the listing's `prefix=`'s; `bucket/` for a key at the top."""
    path = environ.get("PATH_INFO", "/").lstrip("/")
    bucket, _, key = path.partition("/")
    if action in _S3_LISTS or not key:
        key = (parse_qs(environ.get("QUERY_STRING", "")).get("prefix") or [""])[0]
    folder, slash, _ = key.partition("/")
    return f"{bucket}/{folder}{slash}" if slash else f"{bucket}/"


class Rates:
    """Every bucket's tokens; `take` says whether a call may go through."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.buckets = []
        self.tokens = {}  # (bucket name, prefix) -> (tokens, time of last refill)
        self.throttled = Counter()  # action -> calls throttled

    def configure(self, body):
        """Replace every bucket (an empty list turns throttling off)."""
        buckets = [Bucket(spec) for spec in body.get("buckets", [])]
        names = [b.name for b in buckets]
        if len(names) != len(set(names)):
            raise ValueError(f"bucket names repeat: {names}")
        with self.lock:
            self.buckets = buckets
            self.tokens = {}
        return self.describe()

    def describe(self):
        with self.lock:
            return {
                "buckets": [b.to_json() for b in self.buckets],
                "throttled": dict(self.throttled),
            }

    def reset_counts(self):
        with self.lock:
            self.throttled.clear()

    def take(self, action, environ):
        """True when `action` may go through now (a token taken from each of
        its buckets), False when a bucket is empty (nothing taken)."""
        if not action:
            return True
        with self.lock:
            mine = [b for b in self.buckets if action in b.actions]
            if not mine:
                return True
            now = self.clock()
            keys = [(b, s3_prefix(environ, action) if b.per_prefix else "") for b in mine]
            levels = []
            for bucket, prefix in keys:
                tokens, last = self.tokens.get((bucket.name, prefix), (bucket.burst, now))
                levels.append(min(bucket.burst, tokens + (now - last) * bucket.rate))
            allowed = all(level >= 1 for level in levels)
            for (bucket, prefix), level in zip(keys, levels, strict=True):
                self.tokens[(bucket.name, prefix)] = (level - 1 if allowed else level, now)
            if not allowed:
                self.throttled[action] += 1
            return allowed
