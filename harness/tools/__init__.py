"""The project's front ends: the suites' pytest plugin, the nightly and its reports, the release matrix, the memory
report, catalogue coverage, the findings runner, the fuzzer, the 2-rank launcher."""
