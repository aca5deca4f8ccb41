"""Export for the tools people already use: what the analysis found, written as a Perfetto trace
(:mod:`.perfetto`, from :mod:`.tracks`) and as a pprof profile (:mod:`.pprof`, from :mod:`.sites`).
The writers are pure functions of the data handed to them; the data come from the analysis."""
