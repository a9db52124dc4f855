"""Speed measurements: training throughput of both frameworks (`python -m benchmarks.speed`) and
inference latency (`python -m benchmarks.latency`)."""
