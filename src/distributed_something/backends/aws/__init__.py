"""The AWS backend: SQS (+ dead-letter queue), S3, ECS on an EC2 Spot fleet, CloudWatch.

boto3 is an optional dependency (the `aws` extra); nothing here is imported by the local path.
"""
