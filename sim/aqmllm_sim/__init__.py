"""aqmllm_sim: closed-loop evaluation of AQM-LLM policies on ns-3."""
