"""dpt benchmarks: scripts that print figures and ratios to a baseline run in the same process."""
