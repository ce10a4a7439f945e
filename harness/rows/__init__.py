"""The database: the case rows (``cases/<area>.py``), the checkpoint contract's clauses, the distributed scenarios,
the fuzzer's programs and the models they build; ``collect`` expands them into cells, the one expansion every
consumer uses."""
