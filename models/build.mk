# make model: the shipped default model from scratch (models/recipe.toml):
# record on ns-3, train the SmolLM2 teacher, distil, DAgger, export, evaluate
# closed loop on the held-out scenarios, write models/default/ and its card,
# ship it as aqmllmd's student.onnx and, only if it passes the gate, as its
# packaged default. Stages already done in build/model
# are skipped (the teacher resumes from its checkpoint); MODEL_FRESH=1 starts over.
# About 25-35 minutes from scratch on a 2-core machine: 14-20 up to the closed
# loop, 10-15 for the closed loop on twenty seeds (models/README.md). Run it alone: a
# loaded host makes verdicts time out, and the gate then refuses to judge.

.PHONY: model model-ready

model: setup
	$(MAKE) model-ready

model-ready: all
	$(if $(MODEL_FRESH),rm -rf $(BUILD)/model)
	$(PY) -m aqmllm_models.cli pipeline models/recipe.toml --out models/default \
		--work $(BUILD)/model --install
