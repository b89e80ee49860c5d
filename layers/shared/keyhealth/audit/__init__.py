"""The nightly audit: dispatch every binding, check each within the exchanges' rate limits,
record transitions, fold correlated failures into incidents, summarise the run."""
