"""orch's trainer: image classifiers from random weights, resumable, with lab-notebook reports.

Command line: `trainer --help` (trainer.cli). Library: trainer.train.train, trainer.engine.
"""
