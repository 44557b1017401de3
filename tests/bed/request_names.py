"""Name an incoming AWS request: (service, action), e.g. ("ec2", "AttachVolume").

The control layer counts and throttles calls by action before moto sees them,
so it must recognise the action from the raw HTTP request the way AWS does:
  * query protocol (EC2, STS, IAM): `Action=` in the form body or query string;
  * JSON protocol (KMS): the `X-Amz-Target: TrentService.Decrypt` header;
  * S3 (REST, path style): method + path + sub-resource; SDKs that add
    `?x-id=GetObject` (Rust, Go v2, JS v3) say it outright.
The service comes from the SigV4 credential scope (header or presigned query).
"""

import io
from urllib.parse import parse_qs


def service_of(environ):
    """Signing name from `Credential=AKID/date/region/SERVICE/aws4_request`."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scope = ""
    if "Credential=" in auth:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0]
    else:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        scope = (query.get("X-Amz-Credential") or [""])[0]
    parts = scope.strip().split("/")
    return parts[3].lower() if len(parts) == 5 else None


def _form_body(environ):
    """Read an urlencoded body and put it back for moto to read again."""
    if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return ""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return ""
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body.decode("utf-8", "replace")


def _query_action(environ):
    for source in (environ.get("QUERY_STRING", ""), _form_body(environ)):
        action = parse_qs(source).get("Action")
        if action:
            return action[0]
    return None


def _json_action(environ):
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    return target.rsplit(".", 1)[-1] if "." in target else None


# Bucket sub-resources whose operation is Get/Put/Delete + this suffix.
_BUCKET_SUBRESOURCES = {
    "acl": "BucketAcl",
    "cors": "BucketCors",
    "encryption": "BucketEncryption",
    "lifecycle": "BucketLifecycleConfiguration",
    "location": "BucketLocation",
    "notification": "BucketNotificationConfiguration",
    "object-lock": "ObjectLockConfiguration",
    "ownershipControls": "BucketOwnershipControls",
    "policy": "BucketPolicy",
    "publicAccessBlock": "PublicAccessBlock",
    "tagging": "BucketTagging",
    "versioning": "BucketVersioning",
}
_VERBS = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}


def _s3_bucket_action(method, query):
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if "uploads" in query and method == "GET":
        return "ListMultipartUploads"
    for key, suffix in _BUCKET_SUBRESOURCES.items():
        if key in query and method in _VERBS:
            return _VERBS[method] + suffix
    if method == "GET":
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(method)


def _s3_object_action(method, query, environ):
    if "uploadId" in query:
        if method == "PUT":
            return "UploadPart"
        return {
            "GET": "ListParts",
            "POST": "CompleteMultipartUpload",
            "DELETE": "AbortMultipartUpload",
        }.get(method)
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if "tagging" in query and method in _VERBS:
        return _VERBS[method] + "ObjectTagging"
    if method == "PUT" and "HTTP_X_AMZ_COPY_SOURCE" in environ:
        return "CopyObject"
    return {
        "GET": "GetObject",
        "PUT": "PutObject",
        "HEAD": "HeadObject",
        "DELETE": "DeleteObject",
    }.get(method)


def _s3_action(environ):
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if query.get("x-id"):
        return query["x-id"][0]
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/").lstrip("/")
    bucket, _, key = path.partition("/")
    if not bucket:
        return "ListBuckets" if method == "GET" else None
    if not key:
        return _s3_bucket_action(method, query)
    return _s3_object_action(method, query, environ)


def name_request(environ):
    """Return (service, action); either may be None for requests we can't name."""
    service = service_of(environ)
    if service == "s3":
        return service, _s3_action(environ)
    action = _json_action(environ) or _query_action(environ)
    return service, action
