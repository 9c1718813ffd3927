"""Real hermes-webui hosts for tests: a fake LLM, a launcher, drivers (see README.md)."""
