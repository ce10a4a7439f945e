"""The fuzzer's programs: frozen values, the hypothesis strategies that draw them, and the oracles that turn one into a case."""
