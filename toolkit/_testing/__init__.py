"""Private helpers shared by the tests, the benchmarks and the CPU backend's tiny model; not public API."""
