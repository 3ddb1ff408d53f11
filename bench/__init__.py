"""Benchmark harness, tables and plots (installed as pahi_rt.bench); results/ holds committed
runs."""
