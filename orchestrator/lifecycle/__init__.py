"""A job's life, step by step: launch, resume, recover, views, teardown, doctor.

The CLI calls one function here per command; this package reads the registry and the cloud, chooses
the job's machine (lifecycle/machines.py) and drives job/ on it.
"""
