"""zdf: a ZeroMQ low-latency cluster runtime for dataflow jobs and function tasks."""

__version__ = "0.1.0"
