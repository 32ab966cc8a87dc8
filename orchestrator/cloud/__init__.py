"""AWS through boto3 only (EC2, S3, IAM, pricing, quotas); never SSH. Typed records out, never raw dicts."""
