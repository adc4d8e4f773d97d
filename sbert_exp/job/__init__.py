"""One job from config to metrics (checks, inputs, steps, reuse, the scored layer choice,
references, the fingerprint) and the sweeper that runs many."""
