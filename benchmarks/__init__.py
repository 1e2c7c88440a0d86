"""Load and latency benchmarks of the service against a bare aiohttp reference.

``python -m benchmarks.run`` (``make bench``) starts both servers on loopback, drives them with the
same load generator and writes ``benchmarks/results/latest.{json,md,png}``. See README.md.
"""
