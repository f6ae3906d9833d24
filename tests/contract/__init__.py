"""One bus contract, run against every adapter."""
