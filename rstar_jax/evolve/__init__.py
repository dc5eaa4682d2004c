"""rStar-Math's rounds of self-evolution as typed, resumable stages; `run.evolve` is the command."""
