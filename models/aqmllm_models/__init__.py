"""aqmllm_models: the AQM-LLM teacher (LLM + LoRA), offline RL, distillation, export."""
