"""The worker runtime: what runs inside Spark tasks, as pure functions of a spec."""
