"""The running node: stream workers (sources → aligner) feeding one inference runner."""
