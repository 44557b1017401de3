"""The `/_bed/` control endpoints, call counting and injected throttling.

A WSGI layer in front of moto. It is not AWS: nothing under `/_bed/` is
signed, and the paths cannot clash with a service (S3 bucket names can't
start with `_`).

  GET  /_bed/calls         -> {"AttachVolume": 3, "GetObject": 1, ...}
  GET  /_bed/answers       -> {"GetObject": {"200": 1, "304": 5}, ...}
                           the same calls by the HTTP status they were answered
                           with (a conditional GET's 304, a 404, a throttle)
  POST /_bed/calls/reset   -> {} and both counts start again from zero
  POST /_bed/throttle      {"action": "AttachVolume", "count": 2}
                           the next 2 AttachVolume calls fail as AWS throttles
                           them (EC2: RequestLimitExceeded, HTTP 503);
                           optional "code", "status", "message" inject any
                           other error instead (e.g. InternalError, 500)
  GET  /_bed/detaches      -> [{"resource": "vol-…", "instance": "i-…",
                               "instance_state": "stopped", "force": false}, ...]
                           every detach the bed accepted, with the holder's
                           state at that moment
  GET  /_bed/config        -> {"attach_delay_ms": 0, "shutdown_delay_ms": 0, "max_page": 0}
  POST /_bed/config        same keys, any may be left out; delays apply to
                           attachments and shutdowns started afterwards,
                           max_page to the next Describe pages
  GET  /_bed/callers       -> {"ASIANODE1": {"calls": {"Decrypt": 2}, "throttled": {"Decrypt": 1}}}
                           the same counts per access key id (SigV4 credential)
  GET  /_bed/rates         -> {"buckets": [...], "throttled": {"Decrypt": 12, ...}}
  POST /_bed/rates         {"buckets": [{"name": "kms", "actions": ["Decrypt"],
                           "rate": 55, "burst": 55, "per_prefix": false}, ...]}
                           request-rate quotas as token buckets (rates.py);
                           none unless set here or by `--rates`; [] turns them off

Throttled calls are counted too: a client that retried twice and then
succeeded has made three calls.
"""

import json
import threading
import uuid
from collections import Counter
from http import HTTPStatus
from xml.sax.saxutils import escape

from ec2_rules import DETACHES, LOCK, PAGING, TIMING
from rates import Rates
from request_names import name_request

# How each service says "slow down". The Rust and Python SDKs retry all three.
_THROTTLE = {
    "ec2": ("RequestLimitExceeded", 503, "Request limit exceeded."),
    "s3": ("SlowDown", 503, "Please reduce your request rate."),
}
_THROTTLE_DEFAULT = ("ThrottlingException", 400, "Rate exceeded")  # JSON services


def _ec2_error(code, message):
    """EC2's query-protocol error document."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{escape(code)}</Code>"
        f"<Message>{escape(message)}</Message>"
        f"</Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    ), "text/xml"


def _s3_error(code, message):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{uuid.uuid4()}</RequestId></Error>"
    ), "application/xml"


def _json_error(code, message):
    return json.dumps({"__type": code, "message": message}), "application/x-amz-json-1.1"


def error_response(service, code, status, message):
    """(status line, headers, body) of an AWS error in the service's own format."""
    render = {"ec2": _ec2_error, "s3": _s3_error}.get(service, _json_error)
    body, content_type = render(code, message)
    data = body.encode()
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(data))),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return f"{status} {HTTPStatus(status).phrase}", headers, data


class Injected:
    """Errors queued for the next N calls of one action."""

    def __init__(self, count, code=None, status=None, message=None):
        self.count = count
        self.code, self.status, self.message = code, status, message

    def for_service(self, service):
        code, status, message = _THROTTLE.get(service, _THROTTLE_DEFAULT)
        return (
            self.code or code,
            int(self.status or status),
            self.message or message,
        )


class BedControl:
    """WSGI middleware: serve /_bed/, count calls, inject errors, else moto."""

    def __init__(self, app, rates=None):
        self.app = app
        self.rates = Rates()
        if rates:
            self.rates.configure(rates)
        self.lock = threading.Lock()
        self.calls = Counter()
        self.answers = {}  # action -> Counter of HTTP status codes
        self.injected = {}  # action -> Injected
        self.callers = {}  # access key id -> {"calls": Counter, "throttled": Counter}

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_bed/"):
            return self.control(environ, start_response)
        service, action = name_request(environ)
        failure = self.record(action)
        if failure is None and not self.rates.take(action, environ):
            failure = Injected(1)  # the service's own throttling answer
        self.record_caller(environ, action, failure is not None)
        start_response = self.counting(action, start_response)
        if failure is not None:
            status, headers, body = error_response(service, *failure.for_service(service))
            start_response(status, headers)
            return [body]
        return self.app(environ, start_response)

    def counting(self, action, start_response):
        """start_response that also counts the answer's status under the action."""
        if not action:
            return start_response

        def counted(status, headers, exc_info=None):
            with self.lock:
                self.answers.setdefault(action, Counter())[status.split(" ", 1)[0]] += 1
            return start_response(status, headers, exc_info)

        return counted

    def record(self, action):
        """Count the call; return the Injected error it must fail with, if any."""
        if not action:
            return None
        with self.lock:
            self.calls[action] += 1
            injected = self.injected.get(action)
            if injected is None:
                return None
            injected.count -= 1
            if injected.count <= 0:
                del self.injected[action]
            return injected

    def record_caller(self, environ, action, failed):
        caller = access_key_of(environ)
        if not action or not caller:
            return
        with self.lock:
            counts = self.callers.setdefault(caller, {"calls": Counter(), "throttled": Counter()})
            counts["calls"][action] += 1
            if failed:
                counts["throttled"][action] += 1

    # --- /_bed/ endpoints ----------------------------------------------------

    def control(self, environ, start_response):
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO").rstrip("/")
        routes = {
            ("GET", "/_bed/calls"): self.get_calls,
            ("GET", "/_bed/answers"): self.get_answers,
            ("GET", "/_bed/callers"): self.get_callers,
            ("POST", "/_bed/calls/reset"): self.reset_calls,
            ("POST", "/_bed/throttle"): self.throttle,
            ("GET", "/_bed/detaches"): self.get_detaches,
            ("GET", "/_bed/config"): self.get_config,
            ("POST", "/_bed/config"): self.set_config,
            ("GET", "/_bed/rates"): lambda _body: self.rates.describe(),
            ("POST", "/_bed/rates"): self.rates.configure,
        }
        handler = routes.get((method, path))
        if handler is None:
            return _json(start_response, "404 Not Found", {"error": f"no {method} {path}"})
        try:
            return _json(start_response, "200 OK", handler(_read_json(environ)))
        except (ValueError, KeyError, TypeError) as err:
            return _json(start_response, "400 Bad Request", {"error": str(err)})

    def get_calls(self, _body):
        with self.lock:
            return dict(self.calls)

    def get_answers(self, _body):
        with self.lock:
            return {action: dict(statuses) for action, statuses in self.answers.items()}

    def get_callers(self, _body):
        with self.lock:
            return {
                caller: {kind: dict(counts) for kind, counts in kinds.items()}
                for caller, kinds in self.callers.items()
            }

    def reset_calls(self, _body):
        with self.lock:
            self.calls.clear()
            self.answers.clear()
            self.callers.clear()
        self.rates.reset_counts()
        return {}

    def throttle(self, body):
        action, count = body["action"], int(body["count"])
        if not isinstance(action, str) or not action or count < 0:
            raise ValueError("need a non-empty action and a count >= 0")
        if body.get("status") is not None:
            HTTPStatus(int(body["status"]))  # refuse what no HTTP client can read
        with self.lock:
            if count == 0:
                self.injected.pop(action, None)
            else:
                self.injected[action] = Injected(
                    count, body.get("code"), body.get("status"), body.get("message")
                )
        return {"action": action, "count": count}

    def get_detaches(self, _body):
        with LOCK:
            return list(DETACHES)

    def get_config(self, _body):
        return {
            "attach_delay_ms": round(TIMING.attach * 1000),
            "shutdown_delay_ms": round(TIMING.shutdown * 1000),
            "max_page": PAGING.max_page,
        }

    def set_config(self, body):
        if "attach_delay_ms" in body:
            TIMING.attach = _non_negative_ms(body["attach_delay_ms"]) / 1000
        if "shutdown_delay_ms" in body:
            TIMING.shutdown = _non_negative_ms(body["shutdown_delay_ms"]) / 1000
        if "max_page" in body:
            PAGING.max_page = _non_negative_ms(body["max_page"])
        return self.get_config(None)


def access_key_of(environ):
    """The access key id a request was signed with (SigV4 header or query)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in auth:
        return auth.split("Credential=", 1)[1].split("/", 1)[0].strip()
    query = environ.get("QUERY_STRING", "")
    if "X-Amz-Credential=" in query:
        return query.split("X-Amz-Credential=", 1)[1].split("%2F", 1)[0].split("/", 1)[0]
    return None


def _non_negative_ms(value):
    ms = int(value)
    if ms < 0:
        raise ValueError("delays are >= 0 ms")
    return ms


def _read_json(environ):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    return json.loads(raw) if raw.strip() else {}


def _json(start_response, status, payload):
    data = json.dumps(payload).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
