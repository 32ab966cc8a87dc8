"""Reaching a machine: SSH (paramiko) or this one, behind one `Session` interface. Never boto3."""
