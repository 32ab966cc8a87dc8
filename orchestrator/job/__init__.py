"""The job on its machine, written once against `machines.base.Machine`: start, logs, status and stop, weights.

    start.py     the data there, the trainer image, the trainer running detached (idempotent)
    logs.py      follow the trainer's output across dropped connections; ended.py says what to do after
    control.py   status, stop, fetch the weights
    sync.py      a local dataset folder to the machine (tar over SSH); an s3:// one copied there
    fetch.py     verified staged downloads;   restore.py  a checkpoint back onto a new machine (--resume)
    spec.py      the trainer's command and what a launch asked for;   logtext.py  timestamped log lines

It never calls a cloud API and never asks which kind of machine it has.
"""
