"""Generated transaction sequences (:mod:`conformance.generators.stateful`)."""
