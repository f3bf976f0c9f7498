"""Python access to the AQM-LLM data path core and its shared-memory channel."""
