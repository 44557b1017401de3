"""S3 answers moto gets wrong in a way the Rust SDK cannot read.

moto 5.2.1 serialises GetBucketVersioning with the root element
`GetBucketVersioningResponse`; S3 (and the API reference,
https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketVersioning.html)
answers `VersioningConfiguration`, and the Rust SDK refuses any other root.
botocore does not check the root, so Python clients never noticed.

The same for CompleteMultipartUpload: moto answers
`CompleteMultipartUploadResponse`, S3
(https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html)
`CompleteMultipartUploadResult`; the Rust SDK reads the first as an
"unhandled error" although the object was made.
"""

from xml.sax.saxutils import escape

_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def versioning_document(status):
    """S3's GetBucketVersioning answer: no Status element until versioning was ever set."""
    inner = f"<Status>{escape(status)}</Status>" if status else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<VersioningConfiguration xmlns="{_NS}">{inner}</VersioningConfiguration>'
    )


def install():
    from moto.s3.responses import S3Response

    def get_bucket_versioning(self):
        status = self.backend.get_bucket_versioning(self.bucket_name)
        return 200, {"Content-Type": "application/xml"}, versioning_document(status)

    S3Response.get_bucket_versioning = get_bucket_versioning

    key_response_post = S3Response._key_response_post

    def complete_with_s3s_root(self, *args, **kwargs):
        answer = key_response_post(self, *args, **kwargs)
        if isinstance(answer, tuple) and len(answer) == 3 and isinstance(answer[2], (str, bytes)):
            status, headers, body = answer
            old, new = "CompleteMultipartUploadResponse", "CompleteMultipartUploadResult"
            if isinstance(body, bytes):
                old, new = old.encode(), new.encode()
            if old in body[:300]:
                body = body.replace(old, new)
                if "content-length" in {k.lower() for k in headers}:
                    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
                return status, headers, body
        return answer

    S3Response._key_response_post = complete_with_s3s_root
