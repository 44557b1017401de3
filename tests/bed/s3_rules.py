"""S3 answers moto gets wrong in a way the Rust SDK cannot read.

moto 5.2.1 serialises GetBucketVersioning with the root element
`GetBucketVersioningResponse`; S3 (and the API reference,
https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketVersioning.html)
answers `VersioningConfiguration`, and the Rust SDK refuses any other root.
botocore does not check the root, so Python clients never noticed.
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
