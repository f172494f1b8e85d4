"""Executors: where attempts run. The scheduler talks to them through ``base.Executor``."""
